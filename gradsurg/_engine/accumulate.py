"""Accumulate: the micro-batches of one step, keyed by task name.

The window is open from the first ``backward(..., sync=False)`` call to the syncing call (or
``zero_grad``). Each micro-batch may hold any subset of the tasks (one task per batch — a
classification batch, then a generation batch — or mixed batches in which a task happens to be
missing). Task t's gradients are summed over the micro-batches it appeared in, for every
parameter it reached; the syncing call runs one surgery over the union of the tasks seen:

- J's row t is task t's summed gradient of the shared parameters, which are those reached by
  two or more tasks *over the window* (or ``shared=``), so a task-homogeneous window still
  finds the shared trunk;
- the other parameters get their plain summed gradient;
- ``accumulate="mean"`` divides task t's sums (its row, its losses, its own parameters'
  gradients) by the number of micro-batches it appeared in.

So ``method="sum"`` equals plain ``loss.backward()`` accumulation over the same micro-batches,
and any method equals one big-batch step whose task losses are the window's summed task losses.

A step between refreshes (``refresh_every``) writes its gradients at once and keeps only its
losses here, for the stats of the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .._stats import SurgeryStats
from .plan import StepPlan

__all__ = ["AccumulationWindow", "TaskSums"]


@dataclass
class TaskSums:
    """One task's sums over the micro-batches of a window.

    Attributes:
        grads: ``id(param) → (param, Σ gradient)`` for every parameter the task reached
            (gradients of α_t L_t; under FSDP2 this rank's shard).
        loss: the summed detached loss (float64, on its device).
        count: how many micro-batches the task appeared in.
    """

    grads: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    loss: Tensor | None = None
    count: int = 0


class AccumulationWindow:
    """The micro-batches accumulated since the last applied step."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskSums] = {}  # in the order the tasks were first seen
        self.micro_batches = 0  # per-task micro-batches held
        self.tasks_per_backward = 1 << 30  # the fewest tasks one autograd call took
        # (tasks, summed losses, micro-batches) of a cached-weights step being accumulated
        self._cached: tuple[tuple[str, ...], Tensor, int] | None = None

    @property
    def open(self) -> bool:
        """Whether per-task micro-batches wait for a syncing call."""
        return self.micro_batches > 0

    @property
    def pending(self) -> bool:
        """Whether any micro-batch (per-task or cached-weights) waits for a syncing call."""
        return self.open or self._cached is not None

    @property
    def names(self) -> tuple[str, ...]:
        """The tasks seen in the window, in the order they were first seen."""
        return tuple(self.tasks)

    def check(self, plan: StepPlan) -> None:
        """Refuse a micro-batch whose tasks differ from those of the cached-weights
        micro-batches already written (their weights belong to those tasks).

        Raises:
            ValueError: naming ``losses``; nothing is changed.
        """
        if self._cached is not None and self._cached[0] != tuple(plan.names):
            raise ValueError(
                f"losses: the micro-batches accumulated with sync=False between refreshes have tasks "
                f"{list(self._cached[0])} and used their cached weights; got {list(plan.names)}"
            )

    def add(self, plan: StepPlan, task: int, grads: list[Tensor | None], loss: Tensor) -> None:
        """Add task ``task`` of ``plan``'s gradients (of ``plan.targets(plan.reached[task])``,
        already localised) and its loss."""
        sums = self.tasks.setdefault(plan.names[task], TaskSums())
        for k, g in zip(plan.reached[task], grads):
            if g is None:
                continue
            p = plan.params[k]
            held = sums.grads.get(id(p))
            if held is None:
                # Owned storage: autograd may hand out expanded or aliased gradients (one tensor
                # for both inputs of an addition), which must not be added into in place.
                sums.grads[id(p)] = (p, g.clone(memory_format=torch.contiguous_format))
            else:
                held[1].add_(g)
        value = loss.detach().to(torch.float64)
        sums.loss = value if sums.loss is None else sums.loss + value.to(sums.loss.device)
        sums.count += 1

    def close_micro_batch(self, tasks_per_backward: int) -> None:
        """One micro-batch was added."""
        self.micro_batches += 1
        self.tasks_per_backward = min(self.tasks_per_backward, tasks_per_backward)

    def take(self) -> tuple[dict[str, TaskSums], int, int]:
        """The window's sums, micro-batches and tasks per backward; the window is emptied."""
        taken = (self.tasks, self.micro_batches, self.tasks_per_backward)
        self.tasks, self.micro_batches, self.tasks_per_backward = {}, 0, 1 << 30
        return taken

    def discard(self, error: BaseException | None = None) -> None:
        """Drop every held micro-batch (``zero_grad``, or a failed capture, which ``error``
        then says)."""
        if self.open and error is not None:
            note = getattr(error, "add_note", None)  # Python ≥ 3.11
            if note is not None:
                note("gradsurg: the micro-batches accumulated with sync=False were discarded")
        self.take()
        self._cached = None

    def add_cached(self, plan: StepPlan) -> None:
        """A cached-weights micro-batch was written: keep its losses for the step's stats."""
        values = torch.stack([v.detach().to(torch.float64) for v in plan.scalars])
        if self._cached is None:
            self._cached = (tuple(plan.names), values, 1)
        else:
            names, total, count = self._cached
            self._cached = (names, values + total, count + 1)

    def close_cached(self, stats: SurgeryStats, inv_scale: float | None) -> SurgeryStats:
        """The stats of a whole cached-weights step: its earlier micro-batches' losses added."""
        cached, self._cached = self._cached, None
        if cached is None:
            return stats
        _, total, count = cached
        counts = tuple(c + count for c in stats.task_micro_batches)
        return replace(
            stats,
            losses=stats.losses + total.cpu() * (inv_scale or 1.0),
            micro_batches=count + 1,
            task_micro_batches=counts,
        )
