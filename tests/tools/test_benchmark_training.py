"""The training-step and memory sections of ``benchmarks.compare`` on tiny models.

Only that they run and report what they document, and that the correctness check agrees with
TorchJD where both define the method the same way; no timing is asserted.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchjd", reason="torchjd not installed (benchmark peer)")

from benchmarks import compare_training, memory
from benchmarks.compare_training import ModelSpec

TINY_MLP = ModelSpec("mlp", width=32, depth=2, batch=16, d_in=16)
TINY_TRANSFORMER = ModelSpec("transformer", width=32, depth=1, batch=2, vocab=64, seq=8)
TRAINING_KEYS = {"section", "model", "T", "P", "method", "library", "median_ms", "check", "note"}
MEMORY_KEYS = {
    "section",
    "case",
    "library",
    "method",
    "T",
    "P",
    "peak_mb",
    "extra_mb",
    "bound_mb",
    "over_naive_mb",
    "over_floor_mb",
    "note",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a busy machine a starved partner
    # thread makes every parallel region wait (observed: 3× the wall time).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # the memory subprocesses
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def training_rows() -> list[dict]:
    return compare_training.run(
        True,
        log=lambda _: None,
        specs=[TINY_MLP, TINY_TRANSFORMER],
        tasks=[2],
        methods=["mean", "upgrad"],
        repeat=1,
    )


def test_training_rows_have_the_documented_keys(training_rows):
    assert training_rows
    for row in training_rows:
        assert row.keys() >= TRAINING_KEYS
        assert row["section"] == "training" and row["T"] == 2 and row["P"] > 0
        assert row["median_ms"] > 0
    libraries = {r["library"] for r in training_rows}
    assert {"naive", "per-task-floor", "gradsurg[torch]", "torchjd-autojac"} <= libraries
    # The baselines do not depend on the method: one row per model and T.
    assert sum(r["library"] == "naive" for r in training_rows) == 2


@pytest.mark.parametrize("method", ["mean", "upgrad"])
@pytest.mark.parametrize("library", ["torchjd-autojac", "torchjd-autogram"])
def test_mlp_gradient_matches_torchjd(training_rows, method, library):
    row = next(
        r
        for r in training_rows
        if r["model"].startswith("mlp") and r["method"] == method and r["library"] == library
    )
    assert row["check"].startswith("ok"), row


def test_upgrad_is_not_measured_for_libmtl(training_rows):
    assert not [r for r in training_rows if r["library"] == "libmtl" and r["method"] == "upgrad"]


def test_grad_check_flags_a_different_gradient():
    ref = torch.ones(10, dtype=torch.float64)
    assert compare_training.grad_check(ref * (1 + 1e-7), ref).startswith("ok")
    assert compare_training.grad_check(ref * 2, ref).startswith("FAIL")


def test_memory_subprocess_reports_a_positive_peak():
    spec = {
        "spec": vars(TINY_MLP),
        "T": 2,
        "method": "upgrad",
        "library": "gradsurg[torch]",
        "steps": 2,
    }
    result = memory.measure("training", spec)
    assert result["peak_mb"] > 0 and result["setup_mb"] > 0
    assert result["extra_mb"] >= 0
    assert result["P"] == sum(p.numel() for p in compare_training.build(TINY_MLP, 2)[0].shared())


def test_memory_rows_have_the_documented_keys():
    cases = [
        ("aggregation", {"T": 4, "P": 10_000, "method": "mean", "library": "naive", "steps": 1}),
        (
            "aggregation",
            {"T": 4, "P": 10_000, "method": "upgrad", "library": "gradsurg[torch]", "steps": 1},
        ),
    ]
    rows = memory.run(True, log=lambda _: None, cases=cases)
    assert len(rows) == 2
    for row in rows:
        assert row.keys() >= MEMORY_KEYS
        assert row["section"] == "memory" and row["peak_mb"] > 0
        assert row["bound_mb"] == pytest.approx(4 * 10_000 * 4 / 2**20)
    assert rows[0]["over_naive_mb"] == 0
    assert rows[1]["over_floor_mb"] is None  # no per-task-floor case was measured
