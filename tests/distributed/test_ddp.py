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
    # Task-keyed windows (one task per micro-batch, other tasks on each rank; a rank may lack a
    # task for the whole window).
    {"id": "tasks-upgrad", "method": "upgrad", "patterns": {0: [(0,), (1,), (2,)], 1: [(2,), (0,), (1,)]}},
    {"id": "tasks-absent", "method": "mgda", "patterns": {0: [(0,), (0,)], 1: [(1,), (2,)]}},
    {"id": "tasks-sum", "method": "sum", "patterns": {0: [(0, 1), (2,)], 1: [(1,), (2,)]}},
    {
        "id": "tasks-gradvac",
        "method": "gradvac",
        "tasks": ["t0", "t1", "t2"],
        "patterns": {0: [(1,), (0, 2)], 1: [(2,), (1, 0)]},
    },
    # Mixed batches without accumulation: a rank whose batch lacks a task.
    {"id": "tasks-mixed-direct", "method": "upgrad", "patterns": {0: [(0, 1, 2)], 1: [(0, 1)]}},
    {"id": "tasks-loss-space-differ", "method": "dwa", "patterns": {0: [(0, 1, 2)], 1: [(0, 1)]}},
    {"id": "fsdp-tasks", "method": "upgrad", "fsdp": True, "patterns": {0: [(0,), (1,), (2,)], 1: [(0,), (1,), (2,)]}},
    {"id": "fsdp-tasks-differ", "method": "upgrad", "fsdp": True, "patterns": {0: [(0,), (1,)], 1: [(1,), (0,)]}},
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


def _window_reference(case):
    """One process that saw every rank's micro-batches: each rank's losses divided by the world
    size (DDP averages the ranks' gradients), all in one window."""
    model = w.make_model()
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=case["method"], tasks=case.get("tasks"))
    snapshots = []
    for step in range(w.STEPS):
        opt.zero_grad()
        micro = [
            ({k: v / WORLD for k, v in losses.items()}, False)
            for rank in range(WORLD)
            for losses, _ in w.window_losses(model, rank, WORLD, step, case["patterns"])
        ]
        for i, (losses, _) in enumerate(micro):
            opt.backward(losses, sync=i == len(micro) - 1)
        opt.step()
        snapshots.append([p.detach().clone() for p in model.parameters()])
    return snapshots


@pytest.mark.parametrize(
    "case_id", ["tasks-upgrad", "tasks-absent", "tasks-sum", "tasks-gradvac", "tasks-mixed-direct", "fsdp-tasks"]
)
def test_task_keyed_windows_equal_one_process_that_saw_every_rank(ranks, case_id):
    case = next(c for c in CASES if c["id"] == case_id)
    per_rank = _result(ranks, case_id)
    _assert_bitwise_equal_across_ranks(per_rank)
    expected = _window_reference(case)
    names, counts = per_rank[0][1][0]
    assert sorted(names) == ["t0", "t1", "t2"]  # the union over the ranks, on every rank
    assert sum(counts) == sum(len(tasks) for pattern in case["patterns"].values() for tasks in pattern)
    for step, (got, want) in enumerate(zip(per_rank[0][0], expected)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"step {step + 1}")


def test_sum_on_task_keyed_windows_equals_plain_ddp_accumulation(ranks):
    """The ``sum`` run is plain DDP: the gradient of each rank's summed micro-batch losses,
    averaged over the ranks (written out here by hand)."""
    case = next(c for c in CASES if c["id"] == "tasks-sum")
    per_rank = _result(ranks, "tasks-sum")
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(w.STEPS):
        opt.zero_grad()
        for rank in range(WORLD):
            for losses, _ in w.window_losses(model, rank, WORLD, step, case["patterns"]):
                (sum(losses.values()) / WORLD).backward()
        opt.step()
        for a, b in zip(per_rank[0][0][step], model.parameters()):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_fsdp_windows_whose_ranks_hold_other_tasks_are_refused_on_every_rank(ranks):
    for r in range(WORLD):
        result = ranks[r]["fsdp-tasks-differ"]
        assert isinstance(result, str) and "under FSDP2 every rank must hold the same tasks" in result


def test_a_loss_space_method_on_ranks_with_other_tasks_is_refused_on_every_rank(ranks):
    for r in range(WORLD):
        result = ranks[r]["tasks-loss-space-differ"]
        assert isinstance(result, str) and "losses: the ranks hold different tasks" in result
