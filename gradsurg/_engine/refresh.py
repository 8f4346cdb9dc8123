"""Refresh (``refresh_every=k``): the per-task gradients, the Gram matrix and the weights every
k-th step; in between, one backward of ``Σ_t w_t α_t L_t`` with the weights cached at the last
refresh."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from .._stats import SurgeryStats
from ..methods.base import LossWeighting
from .accumulate import AccumulationWindow
from .loss_space import LossPath
from .plan import StepPlan

__all__ = ["CachedWeightsPath", "RefreshSchedule"]


class _FixedWeights(LossWeighting):
    """Weights cached at the last refresh step, as a loss weighting (``Σ_t w_t L_t``)."""

    name = ""

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.cached = weights

    def loss_weights(self, losses: Tensor) -> Tensor:
        return self.cached.to(losses)


class CachedWeightsPath(LossPath):
    """A step between refreshes: one backward of ``Σ_t w_t α_t L_t`` with the cached weights,
    instead of T backward passes.

    The shared parameters get ``Σ_t w_t ∇(α_t L_t)``; a task-specific parameter, reached by one
    task t only, gets ``w_t ∇(α_t L_t)`` from that backward, which is divided by ``w_t`` so that
    it keeps its ordinary gradient ``∇(α_t L_t)``, as at refresh steps (a second, small backward
    serves tasks whose cached weight is 0). Linear in the losses, so micro-batches accumulate.
    """

    def __init__(self, weights: Tensor) -> None:
        super().__init__(_FixedWeights(weights))
        self.weights = weights
        self.keeps_graph = bool((weights == 0).any())

    def adjust(self, plan: StepPlan, specific: dict[int, Tensor]) -> dict[int, Tensor]:
        weights = self.weights.tolist()
        shared = set(plan.shared_idx)
        owner: dict[int, list[int]] = {}
        for t, reached in enumerate(plan.reached):
            for k in reached:
                owner.setdefault(k, []).append(t)
        zero_tasks: dict[int, list[int]] = {}
        out = dict(specific)
        for k, tasks in owner.items():
            if k in shared or len(tasks) != 1:
                continue
            w = weights[tasks[0]]
            if w != 0.0 and k in out:
                out[k] = out[k] / w
            elif w == 0.0:
                zero_tasks.setdefault(tasks[0], []).append(k)
        for t, positions in zero_tasks.items():
            scaled = plan.scalars[t] * plan.alphas[t]
            grads = torch.autograd.grad(scaled, plan.targets(positions), retain_graph=True, allow_unused=True)
            for k, g in zip(positions, plan.localize(positions, grads)):
                if g is not None:
                    out[k] = g
        return out


class RefreshSchedule:
    """Which steps refresh, and the weights cached at the last refresh.

    Args:
        every: k; 1 refreshes every step (no caching).
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.since = 0  # applied steps since the last refresh
        self.cached: tuple[tuple[str, ...], Tensor] | None = None  # (task names, raw weights)

    def cached_path(self, plan: StepPlan, window: AccumulationWindow) -> CachedWeightsPath | None:
        """The cached weights' path for a step between refreshes; None at a refresh step (or
        while per-task micro-batches of a refresh step are being accumulated)."""
        if self.every == 1 or window.open or self.cached is None or self.cached[0] != tuple(plan.names):
            return None
        if window.pending or self.since % self.every != 0:
            return CachedWeightsPath(self.cached[1])
        return None

    def count(self, plan: StepPlan, stats: SurgeryStats, *, refreshed: bool, scale: float) -> SurgeryStats:
        """After an applied step: cache the weights of a refresh (without the reduction's
        factor ``scale``), count the steps since it."""
        if self.every == 1:
            return stats
        if refreshed:
            self.cached = (tuple(plan.names), stats.weights / scale)
            self.since = 1
        else:
            self.since += 1
        return replace(stats, refreshed=refreshed)

    def state_dict(self) -> dict[str, Any]:
        """The schedule's position and cached weights, for a checkpoint."""
        return {"since": self.since, "cached": self.cached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.since = int(state.get("since", 0))
        cached = state.get("cached")
        self.cached = None if cached is None else (tuple(cached[0]), cached[1])
