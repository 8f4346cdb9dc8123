"""The syncing call of an accumulation window: the window's sums as one step.

From the per-task sums of :mod:`.accumulate` this builds the plan of the whole window (the
union of its tasks, the shared parameters over the window) and fills J, the task-specific
gradients and the losses, so that the stages after the capture run as for one big batch.
Under data parallelism the union of the tasks, which parameters each task reached and the
per-task micro-batch counts are agreed by every rank first, so that every rank builds the same
J (a rank that lacked a task contributes zeros to its row, as plain DDP averaging would).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._dtensor import local_view
from .._losses import normalise_task_weights
from ..kernels import reference
from .accumulate import TaskSums
from .capture import Captured
from .context import StepContext
from .decide import all_finite
from .plan import StepPlan

if TYPE_CHECKING:
    from .._buffer import SharedBuffers
    from ..kernels.protocol import Backend

__all__ = ["WindowStep", "window_step"]


@dataclass
class WindowStep:
    """The window as one step: its plan, and what fills J.

    Attributes:
        plan: names (the agreed union), params, reached (over the window), shared_idx.
        sums: the local per-task sums (absent tasks: none).
        factors: per task, what its sums are multiplied by (1, or for ``accumulate="mean"``
            world size / global micro-batch count, so that the ranks' average is the mean).
        counts: per task, the micro-batches it came from (all ranks).
        on_row: called with each complete row of J (the reducer starts its all-reduce).
    """

    plan: StepPlan
    sums: dict[str, TaskSums]
    factors: list[float]
    counts: tuple[int, ...]
    on_row: Callable[[Tensor], None]

    def _grad(self, t: int, p: Tensor) -> Tensor | None:
        sums = self.sums.get(self.plan.names[t])
        held = None if sums is None else sums.grads.get(id(p))
        return None if held is None else held[1]

    def fill(
        self, buffers: SharedBuffers | None, kernels: Sequence[Backend], micro_batches: int, tasks_per_backward: int
    ) -> Captured:
        """Write the rows of J (all-reduced as they complete under DDP) and gather the
        task-specific gradients, finiteness flags and losses of the window."""
        plan, num_tasks = self.plan, self.plan.num_tasks
        if buffers is not None:
            for t in range(num_tasks):
                for group, backend in zip(buffers.groups, kernels):
                    row = [self._grad(t, p) for p in group.params]
                    if group.matrix.dtype != group.grad_dtype:
                        reference.flatten_into(group.rows[t], row)
                    else:
                        backend.flatten_into(group.rows[t], row)
                    if self.factors[t] != 1.0:
                        group.matrix[t].mul_(self.factors[t])
                    self.on_row(group.matrix[t])
        shared = set(plan.shared_idx)
        specific: dict[int, Tensor] = {}
        flags: list[Tensor] = []
        # One device for the flags: read at the step's one host synchronisation, not per task.
        device = local_view(plan.params[0]).device if plan.params else torch.device("cpu")
        for t in range(num_tasks):
            own = []
            for k in plan.reached[t]:
                if k in shared:
                    continue
                g = self._grad(t, plan.params[k])
                if g is None:
                    continue
                g = g * self.factors[t] if self.factors[t] != 1.0 else g
                own.append(g)
                specific[k] = g if k not in specific else specific[k] + g
            flags.append(all_finite(own).reshape(()).to(device) if own else torch.ones((), dtype=torch.bool, device=device))
        for k in sorted(set().union(*plan.reached) - shared):
            if k not in specific:
                # Reached on another rank only: this rank's share of the average is zero.
                specific[k] = torch.zeros_like(local_view(plan.params[k]))
        losses = []
        for t, name in enumerate(plan.names):
            sums = self.sums.get(name)
            value = torch.zeros((), dtype=torch.float64) if sums is None or sums.loss is None else sums.loss.cpu()
            losses.append(value * self.factors[t])
        return Captured(
            specific,
            torch.stack(flags),
            torch.stack(losses),
            micro_batches,
            1 if tasks_per_backward == 1 << 30 else tasks_per_backward,
        )


def window_step(plan: StepPlan, sums: dict[str, TaskSums], names: Sequence[str], ctx: StepContext) -> WindowStep:
    """The step of a window whose tasks are ``names`` (agreed and ordered by the engine).

    ``plan`` is the syncing micro-batch's plan (its parameters are the candidates).
    """
    reducer, options = ctx.reducer, ctx.options
    params = list(plan.params)
    index = {id(p): k for k, p in enumerate(params)}
    for held in sums.values():
        for key, (p, _) in held.grads.items():
            if key not in index:
                index[key] = len(params)
                params.append(p)  # a leaf outside the optimizer reached in an earlier micro-batch
    num_candidates = plan.num_candidates
    reach = torch.zeros(len(names), len(params), dtype=torch.int32)
    counts = torch.zeros(len(names), dtype=torch.int64)
    for t, name in enumerate(names):
        present = sums.get(name)
        if present is not None:
            counts[t] = present.count
            for key in present.grads:
                reach[t, index[key]] = 1
    # Every rank must see the same union of reaches (the optimizer's parameters are in the same
    # order everywhere; leaves outside it stay local).
    reach[:, :num_candidates] = reducer.agree_reach(reach[:, :num_candidates])
    counts = reducer.sum_counts(counts)
    if options.shared is not None:
        shared_idx = [index[id(p)] for p in options.shared]
    else:
        tasks_per_param = reach[:, :num_candidates].sum(dim=0)
        shared_idx = [k for k in range(num_candidates) if int(tasks_per_param[k]) >= 2]
    reached = [sorted(set(torch.nonzero(reach[t]).flatten().tolist()) | set(shared_idx)) for t in range(len(names))]
    window_plan = StepPlan(
        list(names),
        [],
        normalise_task_weights(options.task_weights, list(names), options.tasks),
        params,
        reached,
        shared_idx,
        plan.retain_graph,
        plan.sharding,
        num_candidates,
    )
    world = reducer.world_size if reducer.exact else 1
    if options.accumulate == "mean":
        factors = [world / int(c) if int(c) > 0 else 1.0 for c in counts]
    else:
        factors = [1.0] * len(names)
    return WindowStep(window_plan, sums, factors, tuple(int(c) for c in counts), reducer.row_ready)
