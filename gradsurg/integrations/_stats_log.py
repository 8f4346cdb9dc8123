"""The conflict statistics of a step as flat scalars for loggers (TensorBoard, W&B, CSV).

Names: ``gradsurg/loss/<task>``, ``gradsurg/norm/<task>``, ``gradsurg/weight/<task>``,
``gradsurg/cos/<task_i>__<task_j>`` (i < j in task order) and ``gradsurg/conflicts`` (task
pairs with a negative inner product). Loss-space methods have no Gram matrix: their records
hold losses and weights only.
"""

from __future__ import annotations

import math

from .._stats import SurgeryStats

__all__ = ["StatsAverager", "stats_scalars"]


def stats_scalars(stats: SurgeryStats, prefix: str = "gradsurg") -> dict[str, float]:
    """The scalars of one step (see the module docstring for the names)."""
    names = stats.task_names
    out = {f"{prefix}/loss/{n}": float(v) for n, v in zip(names, stats.losses.tolist())}
    out.update({f"{prefix}/weight/{n}": float(v) for n, v in zip(names, stats.weights.tolist())})
    norms, cosine = stats.norms, stats.cosine
    if norms is not None and cosine is not None:
        out.update({f"{prefix}/norm/{n}": float(v) for n, v in zip(names, norms.tolist())})
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                out[f"{prefix}/cos/{names[i]}__{names[j]}"] = float(cosine[i, j])
        out[f"{prefix}/conflicts"] = float(stats.num_conflicts or 0)
    return out


class StatsAverager:
    """The mean of each scalar over the steps since the last :meth:`pop` (skipped steps and
    NaN weights — elementwise methods — are left out of the means)."""

    def __init__(self, prefix: str = "gradsurg") -> None:
        self.prefix = prefix
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, stats: SurgeryStats | None) -> None:
        """Record one step's stats (None and skipped steps are ignored)."""
        if stats is None or stats.skipped:
            return
        for key, value in stats_scalars(stats, self.prefix).items():
            if math.isfinite(value):
                self._sums[key] = self._sums.get(key, 0.0) + value
                self._counts[key] = self._counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        """The means so far, and start over."""
        out = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return out
