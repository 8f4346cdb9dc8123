"""Per-task gradients in one autograd call per chunk of tasks (``batch_tasks=``).

The T vector-Jacobian products of a step differ only in their output cotangent (e_t for task t),
so ``torch.autograd.grad(..., is_grads_batched=True)`` can run them as one vmapped backward pass
through the shared graph. It is the same arithmetic as T sequential passes (the tests compare
the rows bit for bit on ordinary modules), in fewer, larger kernels: on GPUs that usually wins;
on CPUs the batched matrix products are not faster and the bookkeeping of vmap costs more
(measured in ``python -m benchmarks.compare``, section "cheap paths": 1.2–1.5× the
sequential capture on two cores), so it is off by default.

Not every module can be vmapped: saved-tensor hooks (activation checkpointing), custom
``autograd.Function`` s without a vmap rule and some in-place patterns raise. The first failure
falls back to one task per call for the rest of the step and of the run, with one warning; the
attempt is made with the graph retained until a whole step has succeeded batched, so the
fallback can still traverse it. ``SurgeryStats.tasks_per_backward`` says what a step used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .plan import StepPlan

__all__ = ["TaskBatching"]


class TaskBatching:
    """How the capture stage asks autograd for the per-task gradients.

    Args:
        chunk: tasks per autograd call; 1 is one backward pass per task (the default path).
    """

    def __init__(self, chunk: int = 1) -> None:
        self.chunk = chunk
        self.fallback: str | None = None  # why batching was given up, once it was
        self._verified = False  # a whole step has run batched: no need to retain the graph

    @property
    def active(self) -> bool:
        """Whether calls take more than one task."""
        return self.chunk > 1 and self.fallback is None

    def gradients(self, plan: StepPlan) -> Iterator[tuple[int, list[Tensor | None]]]:
        """Yield ``(t, grads)`` in task order: the gradients of α_t L_t with respect to
        ``plan.targets(plan.reached[t])`` (None where a target is unused)."""
        t = 0
        num_tasks = plan.num_tasks
        batched = False
        while t < num_tasks:
            stop = min(num_tasks, t + self.chunk) if self.active else t + 1
            if stop - t > 1:
                rows = self._batched(plan, range(t, stop))
                if rows is not None:
                    batched = True
                    yield from zip(range(t, stop), rows)
                    t = stop
                    continue
            yield t, self._single(plan, t)
            t += 1
        if batched and self.active:
            self._verified = True  # only a step that really ran batched vouches for the model

    def _retain(self, plan: StepPlan, last_task: int) -> bool:
        return plan.retain_graph or last_task < plan.num_tasks - 1

    def _single(self, plan: StepPlan, t: int) -> list[Tensor | None]:
        loss = plan.scalars[t]
        return list(
            torch.autograd.grad(
                loss,
                plan.targets(plan.reached[t]),
                grad_outputs=torch.full_like(loss, plan.alphas[t]),
                retain_graph=self._retain(plan, t) or (not self._verified and self.active),
                allow_unused=True,
            )
        )

    def _batched(self, plan: StepPlan, tasks: range) -> list[list[Tensor | None]] | None:
        """Rows of the tasks in one vmapped backward, or None after falling back."""
        positions = sorted({k for t in tasks for k in plan.reached[t]})
        losses = [plan.scalars[t] for t in tasks]
        # Row j of the cotangent of loss j is α_t (its own task), zero elsewhere.
        cotangents = []
        for j, (t, loss) in enumerate(zip(tasks, losses)):
            c = loss.new_zeros((len(tasks), *loss.shape))
            c[j] = plan.alphas[t]
            cotangents.append(c)
        retain = self._retain(plan, tasks[-1]) or not self._verified
        try:
            grads: Sequence[Tensor | None] = torch.autograd.grad(
                losses,
                plan.targets(positions),
                grad_outputs=cotangents,
                retain_graph=retain,
                allow_unused=True,
                is_grads_batched=True,
            )
        except (RuntimeError, NotImplementedError) as error:
            if not retain:
                raise RuntimeError(
                    f"batch_tasks: the batched backward failed after its graph was freed ({error}); "
                    "pass batch_tasks=False for this model"
                ) from error
            self.fallback = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            warnings.warn(
                f"batch_tasks: this model cannot run the task gradients as one batched backward "
                f"({self.fallback}); falling back to one backward pass per task",
                stacklevel=4,
            )
            return None
        by_position = dict(zip(positions, grads))
        rows: list[list[Tensor | None]] = []
        for j, t in enumerate(tasks):
            row: list[Tensor | None] = []
            for k in plan.reached[t]:
                g = by_position[k]
                row.append(None if g is None else g[j])
            rows.append(row)
        return rows
