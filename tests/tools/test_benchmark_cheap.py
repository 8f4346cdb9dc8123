"""Section 5 of ``benchmarks.compare`` (the cheap paths on one shared batch) on a tiny
transformer: it runs, checks the exact variants against the exact path and reports what it
documents. No timing is asserted."""

from __future__ import annotations

import pytest

from benchmarks import compare, compare_cheap, memory

TINY = {"kind": "transformer", "width": 32, "depth": 1, "batch": 2, "vocab": 64, "seq": 8}
KEYS = {"section", "model", "T", "P", "variant", "method", "median_ms", "vs_naive", "vs_floor", "check",
        "extra_mb", "over_floor_mb", "bound_mb", "note"}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return compare_cheap.run(True, log=lambda _: None, workloads=["transformer"], tasks=[2], rounds=1,
                             memory=False, spec=TINY)


def test_every_variant_has_a_row_with_the_documented_keys(rows):
    assert [r["variant"] for r in rows] == list(compare_cheap.VARIANTS)
    for r in rows:
        assert r.keys() == KEYS and r["median_ms"] > 0 and r["T"] == 2
    naive = next(r for r in rows if r["variant"] == "naive")
    assert naive["vs_naive"] == 1.0


def test_exact_variants_are_checked_against_the_exact_path(rows):
    check = {r["variant"]: r["check"] for r in rows}
    assert check["exact"] == "reference"
    assert float(check["exact batched"].split()[1]) <= 1e-6  # the same arithmetic, batched
    assert float(check["exact, bf16 J"].split()[1]) <= 2e-2  # J rounded to 8 significant bits
    assert check["representation"] == check["refresh_every=16"] == "approximation"


def test_memory_child_measures_a_cheap_variant():
    result = memory.measure("cheap", {"workload": "transformer", "spec": TINY, "T": 2, "variant": "exact batched",
                                      "method": "upgrad", "steps": 2})
    assert result["peak_mb"] > 0 and result["extra_mb"] >= 0


def test_cheap_targets_are_reported_at_t4():
    row = {"section": "cheap", "model": "m", "T": 4, "P": 10, "method": "upgrad", "median_ms": 1.0, "check": "",
           "extra_mb": 1.0, "bound_mb": 1.0, "note": ""}
    rows = [
        {**row, "variant": "representation", "vs_naive": 1.2, "vs_floor": 0.5, "over_floor_mb": None},
        {**row, "variant": "exact", "vs_naive": 4.0, "vs_floor": 1.2, "over_floor_mb": 0.6},
    ]
    text = compare.targets({"cheap": rows})
    assert "| representation-level ≤ 1.3× the naive step | m T=4 | 1.20× | yes |" in text
    assert "| exact (one pass per task) ≤ 1.05× the per-task floor | m T=4 | 1.20× | no |" in text
    assert "| exact: memory over the floor ≤ 1.0× one T×P fp32 buffer | m T=4 | 0.60× | yes |" in text
    assert "| refresh_every=16 ≤ 1.15× the naive step | not measured in this run | — | — |" in text
