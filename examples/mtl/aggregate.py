"""Aggregating a comparison over seeds: mean ± std, Δm% against single-task, paired differences.

Δm% is the average relative change over the single-task baselines that multi-task papers report
(Maninis et al. 2019; Liu et al. 2021, CAGrad; Navon et al. 2022, Nash-MTL)::

    Δm = (1/T) Σ_t (−1)^{l_t} (M_t − M_single,t) / M_single,t × 100

over the T tasks, ``l_t = 1`` when lower is better. A task with several metrics (ROUGE-1/2/L)
enters with the mean relative change of its metrics, so that every task weighs the same;
``by_task=False`` averages over all K metrics instead (how NYUv2's nine metrics are counted).
Paired differences compare two rows seed by seed (the same seed gives both the same data order
and initialisation), which removes the seed-to-seed spread they share. The task-gradient cosines a run logs per
step (``cos_<a>__<b>`` in its log.csv) are summarised per pair by :func:`pair_statistics`: their
mean and range, and how often the pair conflicts (cosine < 0).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Criterion", "PairStatistics", "delta_m", "format_mean_std", "mean_std", "pair_statistics", "paired_differences"]


@dataclass(frozen=True)
class Criterion:
    """One metric of one task in Δm: ``lower_is_better`` for losses and errors."""

    task: str
    metric: str
    lower_is_better: bool = False


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value). Raises ValueError when empty."""
    if not values:
        raise ValueError("values: empty, nothing to aggregate")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def format_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    """``mean ± std`` of ``scale``·values (just the mean for one value; ``—`` for none)."""
    if not values:
        return "—"
    mean, std = mean_std([scale * v for v in values])
    sign = "+" if signed else ""
    text = f"{mean:{sign}.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def delta_m(
    metrics: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    criteria: Sequence[Criterion],
    by_task: bool = True,
) -> float:
    """Δm% of ``metrics`` against the single-task ``reference`` (both ``{task: {metric: value}}``)
    over ``criteria``: the mean over tasks of each task's mean relative change (``by_task``), or
    the mean over all criteria. Raises ValueError for a missing value or a zero reference."""
    if not criteria:
        raise ValueError("criteria: empty")
    changes: dict[str, list[float]] = {}
    for c in criteria:
        try:
            value, ref = metrics[c.task][c.metric], reference[c.task][c.metric]
        except KeyError:
            raise ValueError(f"no value of {c.task}/{c.metric} in the run or its single-task reference") from None
        if ref == 0 or not math.isfinite(ref):
            raise ValueError(f"{c.task}/{c.metric}: the single-task reference is {ref}, no relative change")
        change = (value - ref) / ref
        changes.setdefault(c.task if by_task else f"{c.task}/{c.metric}", []).append(
            -change if c.lower_is_better else change
        )
    return 100.0 * statistics.fmean(statistics.fmean(v) for v in changes.values())


def paired_differences(row: Mapping[int, float], base: Mapping[int, float]) -> list[float]:
    """``row[s] − base[s]`` for every seed ``s`` both have, in seed order."""
    return [row[s] - base[s] for s in sorted(set(row) & set(base))]


@dataclass(frozen=True)
class PairStatistics:
    """One task pair's cosines over a run's steps: mean, range, and the fraction of steps whose
    cosine is negative (the pair conflicts there)."""

    mean: float
    low: float
    high: float
    conflict_fraction: float
    steps: int


def pair_statistics(cosines: Sequence[float | None]) -> PairStatistics | None:
    """Summarise one pair's per-step cosines; steps without a value (None or NaN, e.g. a
    step that skipped the Gram) are left out. None when no step has one."""
    values = [c for c in cosines if c is not None and math.isfinite(c)]
    if not values:
        return None
    return PairStatistics(
        mean=statistics.fmean(values),
        low=min(values),
        high=max(values),
        conflict_fraction=sum(c < 0 for c in values) / len(values),
        steps=len(values),
    )
