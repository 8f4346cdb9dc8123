"""DDP and FSDP2 on gloo, two spawned ranks on localhost: every rank's parameters after every
step equal a single-process run on the concatenated batch, and are bitwise equal across ranks."""

from __future__ import annotations

import socket

import _ddp_worker as w
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gradsurg import GradSurgery

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)

WORLD = 2
CASES = [
    {"id": "pcgrad", "method": "pcgrad"},
    {"id": "mgda", "method": "mgda"},
    {"id": "upgrad", "method": "upgrad"},
    {"id": "nash_mtl", "method": "nash_mtl"},
    {"id": "uw", "method": "uw"},
    {"id": "graddrop", "method": "graddrop"},
    {"id": "accumulate", "method": "pcgrad", "micro_batches": 2},
    {"id": "batched", "method": "upgrad", "batch_tasks": True, "micro_batches": 2},
    {"id": "unused", "method": "mgda", "find_unused": True},
    {"id": "nan-raise", "method": "pcgrad", "nan_rank": 1, "nonfinite_step": 1},
    {"id": "nan-skip", "method": "pcgrad", "nan_rank": 1, "nonfinite_step": 1, "nonfinite": "skip"},
    {"id": "local", "method": "mgda", "mode": "local"},
    {"id": "fsdp-pcgrad", "method": "pcgrad", "fsdp": True},
    {"id": "fsdp-mgda", "method": "mgda", "fsdp": True},
    {"id": "fsdp-upgrad", "method": "upgrad", "fsdp": True},
    {"id": "fsdp-nash_mtl", "method": "nash_mtl", "fsdp": True},
    {"id": "fsdp-uw", "method": "uw", "fsdp": True},
    {"id": "fsdp-accumulate", "method": "mgda", "fsdp": True, "micro_batches": 2},
    {"id": "fsdp-nan", "method": "pcgrad", "fsdp": True, "nan_rank": 0, "nonfinite_step": 1, "nonfinite": "skip"},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run every case once on two gloo ranks; {rank: {case id: result}}."""
    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(
        w.worker, args=(WORLD, _free_port(), str(out), CASES), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = 120.0
    import time

    start = time.monotonic()
    while not ctx.join(timeout=5):
        if time.monotonic() - start > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the DDP ranks did not finish within 120 s")
    return {r: torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)}


def _reference(case):
    """The single-process run on the concatenated batch (the same losses, the global batch)."""
    model = w.make_model()
    opt = GradSurgery(
        torch.optim.SGD(model.parameters(), lr=0.1),
        method=w.make_method(case["method"]),
        nonfinite=case.get("nonfinite", "raise"),
    )
    return w.run_case(model, opt, 0, 1, micro_batches=case.get("micro_batches", 1))


def _result(ranks, case_id):
    per_rank = [ranks[r][case_id] for r in range(WORLD)]
    for r in per_rank:
        assert not isinstance(r, str), r
    return per_rank


def _assert_bitwise_equal_across_ranks(per_rank):
    (snap0, out0), (snap1, out1) = per_rank
    assert out0 == out1
    for step0, step1 in zip(snap0, snap1):
        for a, b in zip(step0, step1):
            assert torch.equal(a, b)


EXACT = ["pcgrad", "mgda", "upgrad", "nash_mtl", "uw", "graddrop", "accumulate", "batched", "unused"]
FSDP = ["fsdp-pcgrad", "fsdp-mgda", "fsdp-upgrad", "fsdp-nash_mtl", "fsdp-uw", "fsdp-accumulate"]


@pytest.mark.parametrize("case_id", EXACT + FSDP)
def test_ddp_equals_the_single_process_global_batch(ranks, case_id):
    case = next(c for c in CASES if c["id"] == case_id)
    per_rank = _result(ranks, case_id)
    _assert_bitwise_equal_across_ranks(per_rank)
    expected, outcomes = _reference(case)
    assert per_rank[0][1] == outcomes == ["ok"] * w.STEPS
    for step, (got, want) in enumerate(zip(per_rank[0][0], expected)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"step {step + 1}")


@pytest.mark.parametrize(
    ("case_id", "outcome"), [("nan-raise", "raised"), ("nan-skip", "skipped"), ("fsdp-nan", "skipped")]
)
def test_a_nan_on_one_rank_is_one_decision_on_every_rank(ranks, case_id, outcome):
    per_rank = _result(ranks, case_id)
    _assert_bitwise_equal_across_ranks(per_rank)
    snapshots, outcomes = per_rank[0]
    assert outcomes == ["ok", outcome, "ok"]
    # Nothing changed at the non-finite step, on any rank.
    for a, b in zip(snapshots[0], snapshots[1]):
        assert torch.equal(a, b)


def test_local_mode_keeps_replicas_identical_but_is_an_approximation(ranks):
    per_rank = _result(ranks, "local")
    _assert_bitwise_equal_across_ranks(per_rank)
    expected, _ = _reference({"method": "mgda"})
    differs = any(not torch.allclose(a, b, rtol=1e-4) for a, b in zip(per_rank[0][0][-1], expected[-1]))
    assert differs  # the mean of per-rank MGDA is not MGDA of the global batch
