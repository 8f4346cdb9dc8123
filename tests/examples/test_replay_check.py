"""examples/replay_check.py on the committed four-task trace and logs: the first replayed step
equals the trained runs' first step (the same gradients), and the table prints."""

from __future__ import annotations

from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "four-task"
TRACE = RESULTS / "multi-task_mean" / "seed0" / "trace.jsonl"


@pytest.mark.skipif(not TRACE.exists(), reason="the four-task trace is not in this checkout")
def test_the_first_step_replayed_is_the_trained_first_step(capsys):
    from examples import replay_check

    rows = replay_check.main(["--trace", str(TRACE), "--results", str(RESULTS), "--seed", "0"])
    assert {r["method"] for r in rows} == set(replay_check.METHODS)
    for r in rows:
        assert r["trained_first"] is not None
        for got, want in zip(r["replayed_first"], r["trained_first"]):
            assert abs(got - want) < 1e-6, r["method"]
        for got, want in zip(r["replayed_mean"], r["trained_mean"]):
            assert abs(got - want) < 0.05, r["method"]  # docs/results.md: within 3.1 points
    assert "| mgda |" in capsys.readouterr().out
