"""Capture: one autograd pass per task, its shared gradients straight into its row of J."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._buffer import SharedBuffers
from ..kernels import reference
from .batching import TaskBatching
from .decide import all_finite
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
    """What the capture stage produced besides the rows of J (of the whole window for an
    accumulated step).

    Attributes:
        specific: position in the plan's ``params`` → Σ_t α_t ∇L_t for task-specific parameters
            (written into ``.grad`` only once the step is known to succeed).
        finite_specific: ``(T,)`` bool, whether each task's task-specific gradients are finite
            (on the parameters' device; read at the step's one host synchronisation).
        losses: ``(T,)`` float64 sum of the detached losses, on their device.
        micro_batches: how many ``backward`` calls were captured.
        tasks_per_backward: the most tasks one autograd call took (1: a pass per task).
    """

    specific: dict[int, Tensor] = field(default_factory=dict)
    finite_specific: Tensor | None = None
    losses: Tensor | None = None
    micro_batches: int = 0
    tasks_per_backward: int = 1


def capture_task_gradients(
    plan: StepPlan,
    buffers: SharedBuffers | None,
    kernels: Sequence[Backend],
    *,
    on_row: Callable[[Tensor], None] | None = None,
    batching: TaskBatching | None = None,
) -> Captured:
    """Run T autograd passes; write task t's gradients of the shared parameters into row t of J
    (of every layout group).

    Gradients are of α_t L_t. A shared parameter a task does not reach gets a zero segment.
    ``on_row`` is called with each group's row of task t once it is complete (a data-parallel
    reducer starts its all-reduce there). Nothing visible to the user (``.grad``, parameters)
    is changed here. ``batching`` runs several tasks per autograd call (``batch_tasks=``).
    """
    slot = {k: s for s, k in enumerate(plan.shared_idx)}
    batching = batching or TaskBatching()
    batched = batching.active
    captured = Captured(micro_batches=1)
    flags: list[Tensor] = []
    for t, grads in batching.gradients(plan):
        name, loss = plan.names[t], plan.scalars[t]
        for k, g in zip(plan.reached[t], grads):
            if g is not None:
                check_dense(name, k, g)
        grads = plan.localize(plan.reached[t], grads)
        row: list[Tensor | None] = [None] * len(slot)
        task_specific: list[Tensor] = []
        for k, g in zip(plan.reached[t], grads):
            if g is None:
                continue
            if k in slot:
                row[slot[k]] = g
            else:
                task_specific.append(g)
                previous = captured.specific.get(k)
                captured.specific[k] = g if previous is None else previous + g
        flags.append(all_finite(task_specific).to(loss.device) if task_specific else loss.new_ones((), dtype=torch.bool))
        if buffers is not None:
            for group, part, backend in zip(buffers.groups, buffers.split(row), kernels):
                if group.matrix.dtype != group.grad_dtype:
                    reference.flatten_into(group.rows[t], part)  # narrower J: torch converts the dtype
                else:
                    backend.flatten_into(group.rows[t], part)
                if on_row is not None:
                    on_row(group.matrix[t])
    captured.tasks_per_backward = min(batching.chunk, plan.num_tasks) if batched and batching.active else 1
    captured.finite_specific = torch.stack(flags)
    captured.losses = torch.stack([loss.detach().to(torch.float64) for loss in plan.scalars])
    return captured
