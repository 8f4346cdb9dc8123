"""Grouped surgery (``groups=``): an independent Gram matrix, weights and combination per group
of shared parameters."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..methods.base import GramMethod, Method
from .context import StepContext
from .gram import HostView, to_host
from .per_task import PerTaskGradientPath
from .write import write_shared_subset

if TYPE_CHECKING:
    from .._buffer import GradBuffer, SharedBuffers
    from ..kernels.protocol import Backend

__all__ = ["GroupedGramPath"]


class GroupedGramPath(PerTaskGradientPath):
    """GradVac's per-layer strategy and TorchJD's grouping recipe: each group has its own copy
    of the method and of its state (``methods``, grown as groups are met; the engine saves and
    restores them). The groups' Gram matrices come from one pass over J (each column once).

    ``stats.weights`` is NaN (there is one weight vector per group: ``stats.group_weights``);
    ``stats.gram`` is the Gram matrix of the whole shared gradient (the sum of the groups').
    """

    def __init__(self, groups: list[list[Tensor]] | None, methods: list[Method]) -> None:
        self.groups = groups  # None: one group per shared parameter
        self.methods = methods
        self.last_group_grams: Tensor | None = None  # of the last step, for its stats

    def members(self, buffers: SharedBuffers) -> list[set[int]]:
        """Each group's shared parameters (ids); shared parameters in no group form the last."""
        if self.groups is None:
            return [{id(p)} for p in buffers.params]
        ids = [{id(p) for p in group} for group in self.groups]
        rest = {id(p) for p in buffers.params} - set().union(*ids)
        return [*ids, rest] if rest else ids

    def combine(
        self, ctx: StepContext, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> tuple[None, Tensor]:
        members = self.members(buffers)
        while len(self.methods) < len(members):
            self.methods.append(copy.deepcopy(self.methods[0]))  # a fresh state per new group
        num_tasks = buffers.num_tasks
        weights_per_group, grams = [], []
        for ids, group_method in zip(members, self.methods):
            parts = []
            for buf, backend in zip(buffers.groups, kernels):
                cols = [j for j, p in enumerate(buf.params) if id(p) in ids]
                if cols:
                    parts.append(backend.gram_lists([[buf.rows[t][j] for j in cols] for t in range(num_tasks)]))
            gram = to_host(host.losses, ctx.reducer.reduce_gram(parts), None, host.inv_scale).gram
            assert gram is not None and isinstance(group_method, GramMethod)
            grams.append(gram)
            weights_per_group.append(group_method.weights(gram, losses=host.losses) * scale)
        for ids, weights in zip(members, weights_per_group):
            w = weights.tolist()
            for buf in buffers.groups:
                cols = [j for j, p in enumerate(buf.params) if id(p) in ids]
                if not cols:
                    continue

                def combine(beta: float, b: GradBuffer = buf, cs: list[int] = cols, ws: list[float] = w) -> None:
                    for j in cs:
                        out = b.grads[j]
                        if beta == 0.0:
                            out.zero_()
                        for t, wt in enumerate(ws):
                            out.add_(b.rows[t][j], alpha=wt)

                write_shared_subset(buf, cols, combine)
        self.last_group_grams = torch.stack(grams)
        return None, torch.stack(weights_per_group)
