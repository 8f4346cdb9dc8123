"""Data-parallel training on ``torch.distributed``: the reduce stage across processes.

Semantics (``data_parallel="exact"``): the update on every rank is the one a single process
computes on the global batch. Each task's gradient is the mean over ranks of the local per-task
gradients: the rows of J are all-reduced (one asynchronous all-reduce per row, launched as soon
as the row is complete, so it overlaps the next task's backward), and so are the task-specific
gradients and the losses. Every rank then holds the same J, computes the same Gram matrix and
the same weights, and advances stateful methods identically; no weights are broadcast.
Communication: T times the gradients of the shared parameters, i.e. T× a plain DDP step.

FSDP2 (``fully_shard``): each rank holds a shard of every task's gradient (see
:mod:`gradsurg._dtensor`); the partial Gram matrices of the shards are all-reduced (T×T numbers),
every rank gets the same weights and combines its own shard. Communication: T× the gradients
(one all-reduce per task of the full gradient, where FSDP reduce-scatters once).

``data_parallel="local"`` is the cheap approximation: each rank runs the surgery on its own J,
and the combined gradients are averaged across ranks as plain DDP would (1× communication).
The update is the mean of per-rank surgeries, not the surgery of the global batch.

The autograd passes gradsurg runs (``torch.autograd.grad``) never fire DDP's gradient hooks, so
a ``DistributedDataParallel`` model's reducer does no communication of its own in these steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._collectives import mean_over_ranks_

if TYPE_CHECKING:
    from .capture import Captured

__all__ = ["DataParallel", "LocalReduce", "ShardedReduce", "make_reducer"]


class LocalReduce:
    """The single-process reducer: J and the task-specific gradients are already global."""

    exact = True
    world_size = 1
    #: Whether gradients computed by one backward (loss-space methods) must be averaged here.
    averages_gradients = False

    def row_ready(self, row: Tensor) -> None:
        """Nothing to start in one process."""

    def reduce_captured(self, captured: Captured) -> None:
        """Nothing to exchange in one process."""

    def agree(self, finite: Tensor) -> Tensor:
        """One process decides alone."""
        return finite

    def agree_weights(self, ok: Tensor) -> Tensor:
        """A decision that follows from the weights: the same everywhere when every rank has
        the same J (one process, exact mode), so nothing to exchange."""
        return ok

    def gather_names(self, names: Sequence[str]) -> list[list[str]]:
        """Every rank's task names (one process: its own)."""
        return [list(names)]

    def agree_reach(self, reach: Tensor) -> Tensor:
        """``(T, K)`` 0/1: whether task t reached candidate parameter k on any rank."""
        return reach

    def sum_counts(self, counts: Tensor) -> Tensor:
        """``(T,)`` micro-batch counts summed over the ranks."""
        return counts

    def check_micro_batch_tasks(self, names: Sequence[str]) -> None:
        """Nothing to check in one process (FSDP2 needs every rank on the same tasks)."""

    def mean_(self, tensors: Sequence[Tensor]) -> None:
        """Nothing to average in one process."""

    def reduce_gram(self, parts: list[Tensor]) -> list[Tensor]:
        """The Gram matrix parts are already global."""
        return parts

    def finish(self, grads: Sequence[Tensor]) -> None:
        """Nothing to average in one process."""


class DataParallel(LocalReduce):
    """All-reduce what a step needs across the ranks of ``group``.

    Args:
        group: the process group (``None``: torch.distributed's default group).
        exact: True for the global-batch surgery (reduce J), False for the local approximation
            (reduce the combined gradients after the write).
    """

    def __init__(self, group: Any, *, exact: bool = True) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.exact = exact
        self.world_size = dist.get_world_size(group)
        self.averages_gradients = exact
        self._pending: list[tuple[Tensor, Any]] = []

    def row_ready(self, row: Tensor) -> None:
        """Start the all-reduce of a complete row of J (exact mode), to overlap the next task."""
        if self.exact:
            self._pending.append((row, self._dist.all_reduce(row, group=self.group, async_op=True)))

    def reduce_captured(self, captured: Captured) -> None:
        """Finish the rows' all-reduces and average them; average the task-specific gradients
        and the losses (exact mode)."""
        for row, work in self._pending:
            work.wait()
            row.div_(self.world_size)
        self._pending.clear()
        if not self.exact:
            return
        if captured.specific:
            keys = sorted(captured.specific)
            values = [captured.specific[k].clone() for k in keys]
            self.mean_(values)
            captured.specific = dict(zip(keys, values))
        if captured.losses is not None:
            captured.losses = captured.losses.clone()
            self.mean_([captured.losses])

    def agree(self, finite: Tensor) -> Tensor:
        """A task is finite only if it is on every rank: one decision everywhere."""
        flags = finite.to(torch.int32)
        self._dist.all_reduce(flags, op=self._dist.ReduceOp.MIN, group=self.group)
        return flags.to(torch.bool)

    def agree_weights(self, ok: Tensor) -> Tensor:
        """Local mode: each rank has its own weights, so agree (exact mode: they are equal)."""
        return ok if self.exact else self.agree(ok)

    def gather_names(self, names: Sequence[str]) -> list[list[str]]:
        """Every rank's task names, the same lists on every rank (exact mode; in local mode each
        rank keeps its own step)."""
        if not self.exact:
            return [list(names)]
        gathered: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(gathered, list(names), group=self.group)
        return [list(rank) for rank in gathered]

    def agree_reach(self, reach: Tensor) -> Tensor:
        """Whether task t reached parameter k on any rank (exact mode)."""
        if not self.exact:
            return reach
        out = reach.clone()
        self._dist.all_reduce(out, op=self._dist.ReduceOp.MAX, group=self.group)
        return out

    def sum_counts(self, counts: Tensor) -> Tensor:
        """Micro-batch counts summed over the ranks (exact mode)."""
        if not self.exact:
            return counts
        out = counts.clone()
        self._dist.all_reduce(out, group=self.group)
        return out

    def mean_(self, tensors: Sequence[Tensor]) -> None:
        """Average ``tensors`` over the ranks, in place."""
        mean_over_ranks_(tensors, self.group)

    def finish(self, grads: Sequence[Tensor]) -> None:
        """Local mode: average the combined gradients over the ranks, as plain DDP would."""
        if not self.exact:
            self.mean_(grads)


def make_reducer(mode: str, process_group: Any, *, sharded: bool = False) -> LocalReduce:
    """The reducer for ``mode`` (checked by :func:`gradsurg._options.make_options`):
    :class:`DataParallel` when torch.distributed is initialised with more than one rank in
    ``process_group`` (default group if None) and ``mode`` is not ``"none"``
    (:class:`ShardedReduce` for FSDP2 shards, ``sharded``); the single-process
    :class:`LocalReduce` otherwise."""
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if mode == "none" or not ready or dist.get_world_size(process_group) == 1:
        return LocalReduce()
    if sharded:
        return ShardedReduce(process_group)
    return DataParallel(process_group, exact=mode == "exact")


class ShardedReduce(DataParallel):
    """FSDP2: each rank holds its shard of every task's (already averaged) gradient, so J is not
    exchanged; the partial Gram matrices of the shards are summed over the ranks (T×T numbers),
    and the losses averaged."""

    def __init__(self, group: Any) -> None:
        super().__init__(group, exact=True)
        self.averages_gradients = False  # the shards are averaged when they are taken

    def row_ready(self, row: Tensor) -> None:
        """Rows hold shards: nothing to all-reduce."""

    def check_micro_batch_tasks(self, names: Sequence[str]) -> None:
        """Every rank must take the same tasks in a micro-batch: each task's gradient is
        reduce-scattered as it is taken, one collective per task.

        Raises:
            ValueError: naming ``losses``, on every rank.
        """
        gathered: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(gathered, list(names), group=self.group)
        if any(rank != gathered[0] for rank in gathered):
            raise ValueError(
                f"losses: under FSDP2 every rank must hold the same tasks in each accumulated "
                f"micro-batch (each task's gradient shards are reduced as it is taken); the ranks hold "
                f"{gathered}. Use a sampler that gives every rank the same task at the same "
                "micro-step (gradsurg.data.MultiTaskBatchSampler does)"
            )

    def reduce_captured(self, captured: Captured) -> None:
        """Average the losses (the shards were averaged at capture)."""
        if captured.losses is not None:
            captured.losses = captured.losses.clone()
            self.mean_([captured.losses])

    def reduce_gram(self, parts: list[Tensor]) -> list[Tensor]:
        """Σ over ranks of the partial Grams of the local shards: the Gram of the full rows."""
        out = []
        for part in parts:
            part = part.clone()
            self._dist.all_reduce(part, group=self.group)
            out.append(part)
        return out
