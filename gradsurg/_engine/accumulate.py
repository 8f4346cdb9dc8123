"""Accumulate: the micro-batches of one step collected with ``backward(..., sync=False)``.

The window is open from the first ``sync=False`` call to the syncing call (or ``zero_grad``).
Per-task paths hold their capture here (J itself holds the summed rows); a step between
refreshes (``refresh_every``) has written its gradients already and keeps only its losses, for
the stats of the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .._stats import SurgeryStats
from .capture import Captured
from .plan import StepPlan

__all__ = ["AccumulationWindow"]


@dataclass(frozen=True)
class _Held:
    """Held per-task micro-batches: their tasks, shared-parameter key, and what was captured
    besides J (which holds their summed per-task gradients)."""

    names: tuple[str, ...]
    key: tuple | None
    captured: Captured


class AccumulationWindow:
    """The micro-batches accumulated since the last applied step."""

    def __init__(self) -> None:
        self._held: _Held | None = None
        # (tasks, summed losses, micro-batches) of a cached-weights step being accumulated
        self._cached: tuple[tuple[str, ...], Tensor, int] | None = None

    @property
    def open(self) -> bool:
        """Whether per-task micro-batches wait for a syncing call."""
        return self._held is not None

    @property
    def pending(self) -> bool:
        """Whether any micro-batch (per-task or cached-weights) waits for a syncing call."""
        return self._held is not None or self._cached is not None

    @property
    def names(self) -> tuple[str, ...] | None:
        """The tasks of the held micro-batches (None when the window is not open)."""
        return None if self._held is None else self._held.names

    @property
    def key(self) -> tuple | None:
        """The shared-parameter key of the held micro-batches (None without shared ones)."""
        return None if self._held is None else self._held.key

    @property
    def micro_batches(self) -> int:
        """How many per-task micro-batches are held."""
        return 0 if self._held is None else self._held.captured.micro_batches

    def check(self, plan: StepPlan) -> None:
        """Refuse a micro-batch whose tasks differ from the held ones'.

        Raises:
            ValueError: naming ``losses``; nothing is changed.
        """
        names = self.names if self._held is not None else None if self._cached is None else self._cached[0]
        if names is not None and names != tuple(plan.names):
            raise ValueError(
                f"losses: the micro-batches accumulated with sync=False have tasks "
                f"{list(names)}; got {list(plan.names)}"
            )

    def merge(self, captured: Captured) -> Captured:
        """The held capture followed by ``captured`` (itself when nothing is held)."""
        return captured if self._held is None else self._held.captured.merge(captured)

    def hold(self, plan: StepPlan, key: tuple | None, captured: Captured) -> None:
        """Keep a ``sync=False`` micro-batch (already merged) until the syncing call."""
        self._held = _Held(tuple(plan.names), key if plan.shared else None, captured)

    def close(self) -> None:
        """The syncing call took the held micro-batches."""
        self._held = None

    def discard(self, error: BaseException | None = None) -> None:
        """Drop every held micro-batch (``zero_grad``, or a failed capture, which ``error``
        then says)."""
        if self._held is not None and error is not None:
            note = getattr(error, "add_note", None)  # Python ≥ 3.11
            if note is not None:
                note("gradsurg: the micro-batches accumulated with sync=False were discarded")
        self._held = None
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
        return replace(stats, losses=stats.losses + total.cpu() * (inv_scale or 1.0), micro_batches=count + 1)
