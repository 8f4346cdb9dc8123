"""benchmarks/trace_cost.py: the trace's per-step cost, on a tiny run (numbers not asserted)."""

from __future__ import annotations

from benchmarks import trace_cost


def test_measure_reports_both_steps_and_the_record(tmp_path):
    row = trace_cost.measure(2, rounds=2, folder=tmp_path)
    assert set(row) == {"plain", "traced", "record", "bytes_per_record"}
    assert all(v > 0 for v in row.values())
    assert (tmp_path / "trace-T2.jsonl").read_text().count("\n") == 1 + 1 + 2  # header, warm-up, rounds
