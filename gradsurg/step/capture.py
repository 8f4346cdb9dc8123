"""Capture: one autograd pass per task, its shared gradients straight into its row of J."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..buffer import GradBuffer
from .plan import StepPlan

if TYPE_CHECKING:
    from ..kernels.protocol import Backend

__all__ = ["Captured", "capture_task_gradients", "check_dense"]


def check_dense(name: str, k: int, grad: Tensor) -> None:
    """Raise ``ValueError`` naming the loss if ``grad`` (of parameter ``k``) is not dense."""
    if grad.is_sparse or grad.layout != torch.strided:
        raise ValueError(
            f"losses[{name!r}]: parameter {k} of the optimizer got a sparse gradient; "
            "gradient surgery needs dense gradients (e.g. Embedding(sparse=False))"
        )


@dataclass
class Captured:
    """What the capture stage produced besides the rows of J.

    Attributes:
        specific: position in the plan's ``params`` → Σ_t α_t ∇L_t for task-specific parameters
            (written into ``.grad`` only once the step is known to succeed).
        finite_specific: ``(T,)`` bool, whether each task's task-specific gradients are finite
            (on the parameters' device; read at the step's one host synchronisation).
    """

    specific: dict[int, Tensor] = field(default_factory=dict)
    finite_specific: Tensor | None = None


def capture_task_gradients(plan: StepPlan, buffer: GradBuffer | None, kernels: Backend) -> Captured:
    """Run T autograd passes; write task t's gradients of the shared parameters into row t of J.

    Gradients are of α_t L_t. A shared parameter a task does not reach gets a zero segment.
    Nothing visible to the user (``.grad``, parameters) is changed here.
    """
    slot = {k: s for s, k in enumerate(plan.shared_idx)}
    captured = Captured()
    flags: list[Tensor] = []
    for t, (name, loss) in enumerate(zip(plan.names, plan.scalars)):
        grads = torch.autograd.grad(
            loss,
            [plan.params[k] for k in plan.reached[t]],
            grad_outputs=torch.full_like(loss, plan.alphas[t]),
            retain_graph=plan.retain_graph or t < plan.num_tasks - 1,
            allow_unused=True,
        )
        row: list[Tensor | None] = [None] * len(slot)
        task_flags = []
        for k, g in zip(plan.reached[t], grads):
            if g is None:
                continue
            check_dense(name, k, g)
            if k in slot:
                row[slot[k]] = g
            else:
                task_flags.append(torch.isfinite(g).all())
                previous = captured.specific.get(k)
                captured.specific[k] = g if previous is None else previous + g
        flags.append(torch.stack(task_flags).all() if task_flags else loss.new_ones((), dtype=torch.bool))
        if buffer is not None:
            kernels.flatten_into(buffer.rows[t], row)
    captured.finite_specific = torch.stack(flags)
    return captured
