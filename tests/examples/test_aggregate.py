"""examples/mtl/aggregate.py on hand-made numbers: Δm%, paired differences, mean ± std."""

from __future__ import annotations

import math

import _helpers  # noqa: F401
import pytest

from examples.mtl.aggregate import Criterion, delta_m, format_mean_std, mean_std, paired_differences


def test_delta_m_by_hand():
    single = {"sst2": {"accuracy": 0.80}, "aeslc": {"rouge1": 0.20}, "x": {"loss": 2.0}}
    run = {"sst2": {"accuracy": 0.84}, "aeslc": {"rouge1": 0.18}, "x": {"loss": 1.5}}
    criteria = [Criterion("sst2", "accuracy"), Criterion("aeslc", "rouge1"), Criterion("x", "loss", lower_is_better=True)]
    # (+0.04/0.80, −0.02/0.20, +0.5/2.0 since lower is better) = (+5%, −10%, +25%) → mean +20/3 %
    assert delta_m(run, single, criteria) == pytest.approx(20 / 3)
    assert delta_m(single, single, criteria) == 0.0
    # One criterion per task is the (1/T) Σ_t form; equal changes give that change.
    assert delta_m({"a": {"m": 1.1}}, {"a": {"m": 1.0}}, [Criterion("a", "m")]) == pytest.approx(10.0)


def test_delta_m_weighs_tasks_equally_or_every_metric():
    single = {"cls": {"accuracy": 0.5}, "sum": {"rouge1": 0.2, "rouge2": 0.1, "rougeL": 0.2}}
    run = {"cls": {"accuracy": 0.6}, "sum": {"rouge1": 0.2, "rouge2": 0.1, "rougeL": 0.1}}
    criteria = [Criterion("cls", "accuracy"), *(Criterion("sum", m) for m in ("rouge1", "rouge2", "rougeL"))]
    # Changes: cls +20%; sum (0%, 0%, −50%), mean −50/3 %.
    assert delta_m(run, single, criteria) == pytest.approx((20 - 50 / 3) / 2)
    assert delta_m(run, single, criteria, by_task=False) == pytest.approx((20 + 0 + 0 - 50) / 4)


def test_delta_m_refuses_missing_values_and_zero_references():
    with pytest.raises(ValueError, match="sst2/f1"):
        delta_m({"sst2": {"accuracy": 1.0}}, {"sst2": {"accuracy": 1.0}}, [Criterion("sst2", "f1")])
    with pytest.raises(ValueError, match="reference is 0"):
        delta_m({"a": {"m": 1.0}}, {"a": {"m": 0.0}}, [Criterion("a", "m")])
    with pytest.raises(ValueError, match="criteria"):
        delta_m({}, {}, [])


def test_paired_differences_use_common_seeds_in_order():
    row = {2: 0.70, 0: 0.80, 1: 0.75}
    base = {0: 0.78, 1: 0.76, 3: 0.5}
    assert paired_differences(row, base) == pytest.approx([0.02, -0.01])
    assert paired_differences(row, {}) == []


def test_mean_std_and_format():
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == 1.0
    assert mean_std([4.0]) == (4.0, None)
    with pytest.raises(ValueError):
        mean_std([])
    assert format_mean_std([]) == "—"
    assert format_mean_std([0.5], scale=100) == "50.00"
    assert format_mean_std([0.1, 0.3], scale=100) == "20.00 ± 14.14"
    assert format_mean_std([0.02, -0.01], scale=100, signed=True) == "+0.50 ± 2.12"
    assert math.isclose(mean_std([0.02, -0.01])[1], math.sqrt(0.00045))


def test_pair_statistics_by_hand():
    from examples.mtl.aggregate import pair_statistics

    stats = pair_statistics([0.2, -0.1, None, float("nan"), -0.3, 0.0])
    # Four finite steps: mean (0.2 − 0.1 − 0.3 + 0)/4 = −0.05; two of them negative (0 is not a conflict).
    assert stats.steps == 4
    assert stats.mean == pytest.approx(-0.05)
    assert (stats.low, stats.high) == (-0.3, 0.2)
    assert stats.conflict_fraction == 0.5
    assert pair_statistics([None, float("nan")]) is None
    assert pair_statistics([]) is None
