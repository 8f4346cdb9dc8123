"""The peer-library adapters of the comparison benchmark (benchmarks/peers.py) and section 1
(benchmarks/compare_aggregation.py): each adapter computes what gradsurg computes where the
definitions match, on small random inputs.

Tolerances: float64 closed forms and the same algorithms 1e-7 (TorchJD runs in the dtype of its
input); float32 (LibMTL always flattens into float32) 1e-4; iterative peer solvers 1e-3 (TorchJD's
CAGrad with cvxpy, LibMTL's CAGrad with SLSQP and its Frank–Wolfe MGDA) or 1e-4 (TorchJD's
Nash-MTL on a well-conditioned problem, where its iterations converge).
"""

from __future__ import annotations

import importlib.util
import random
import sys
import warnings

import pytest
import torch

from benchmarks import compare_aggregation, peers
from gradsurg.methods.gradvac import gradvac_weights
from gradsurg.methods.pcgrad import pcgrad_weights

F64 = torch.float64
SHAPES = [(4, 5), (7,), (3, 2, 2)]


def _lists(num_tasks: int, dtype: torch.dtype, seed: int = 0) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    common = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    lists = []
    for t in range(num_tasks):
        b = (t % 3) - 1.0  # conflicting, aligned and independent tasks
        lists.append([(torch.randn(s, generator=gen, dtype=dtype) + b * c) * (1 + 0.5 * t)
                      for s, c in zip(SHAPES, common)])
    return lists


def _matrix(lists: list[list[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in lists]).to(F64)


def _flat_grads(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params]).to(F64)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


def _first_missing(*modules: str) -> str | None:
    """The first of ``modules`` that is not installed (found without importing it)."""
    return next((m for m in modules if importlib.util.find_spec(m) is None), None)


# The peers are optional tools: without them these tests skip, naming the missing package; any
# other PeerUnavailable (an unpaired method, a broken adapter) fails the test.
_TORCHJD_MISSING = _first_missing("torchjd", "cvxpy", "quadprog")
requires_torchjd = pytest.mark.skipif(
    _TORCHJD_MISSING is not None,
    reason=f"{_TORCHJD_MISSING} not installed (torchjd[full], a benchmark peer)",
)
requires_libmtl = pytest.mark.skipif(
    _first_missing("LibMTL") is not None,
    reason="LibMTL not installed (a benchmark peer: pip install --no-deps LibMTL==1.1.5)",
)


TORCHJD_TOL = {"cagrad": 1e-3, "nash_mtl": 1e-4}


@requires_torchjd
@pytest.mark.parametrize("name", [n for n in peers.TORCHJD_METHODS if n != "mgda"])
def test_torchjd_pair_same_definition(name):
    """jac_to_grad with TorchJD's aggregator equals gradsurg's method as paired (float64)."""
    from torchjd.autojac import jac_to_grad

    num_tasks = 3
    aggregator, method = peers.torchjd_pair(name, num_tasks=num_tasks)
    lists = _lists(num_tasks, F64)
    J = _matrix(lists)
    G = J @ J.T
    params = [torch.zeros(s, dtype=F64, requires_grad=True) for s in SHAPES]
    for k, p in enumerate(params):
        p.jac = torch.stack([row[k] for row in lists])
    torch.manual_seed(7)
    if name == "pcgrad":
        w = pcgrad_weights(G, torch.stack([torch.randperm(num_tasks) for _ in range(num_tasks)]))
    elif name == "gradvac":
        rows = []
        for i in range(num_tasks):
            others = [j for j in range(num_tasks) if j != i]
            rows.append([i] + [others[k] for k in torch.randperm(num_tasks - 1).tolist()])
        w = gradvac_weights(G, torch.tensor(rows), torch.zeros(num_tasks, num_tasks, dtype=F64), method.beta)[0]
    else:
        w = method.weights(G)
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jac_to_grad(params, aggregator)
    assert not hasattr(params[0], "jac")  # jac_to_grad consumes .jac unless retain_jac=True
    assert _rel(_flat_grads(params), w @ J) <= TORCHJD_TOL.get(name, 1e-7)
    assert (peers.torchjd_note(name) == "") == (name in ("mean", "imtl_g", "config", "aligned_mtl"))


def test_torchjd_mgda_is_documented_as_approximate():
    assert "Frank–Wolfe" in peers.torchjd_note("mgda")


LIBMTL_TOL = {"cagrad": 1e-3, "mgda": 1e-3}


@requires_libmtl
@pytest.mark.parametrize("name", list(peers.LIBMTL_METHODS))
def test_libmtl_aggregate_lists_matches_gradsurg(name):
    """LibMTL's own backward on given gradients equals gradsurg's method with LibMTL's definition
    (EW = sum; PCGrad/GradVac with LibMTL's random.shuffle orders replayed; float32)."""
    num_tasks = 3  # LibMTL 1.1.5's CAGrad only runs with 3 tasks
    params = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    host = peers.libmtl_host(name, params, num_tasks)
    lists = _lists(num_tasks, torch.float32)
    J = _matrix(lists)
    G = J @ J.T
    method = peers.libmtl_method(name)
    random.seed(3)
    if name in ("pcgrad", "gradvac"):
        rows = []
        for i in range(num_tasks):
            index = list(range(num_tasks)) if name == "pcgrad" else [j for j in range(num_tasks) if j != i]
            random.shuffle(index)
            rows.append(index if name == "pcgrad" else [i, *index])
        order = torch.tensor(rows)
        if name == "pcgrad":
            w = pcgrad_weights(G, order)
        else:
            w = gradvac_weights(G, order, torch.zeros(num_tasks, num_tasks, dtype=F64), method.beta)[0]
    else:
        w = method.weights(G)
    random.seed(3)
    host.aggregate_lists(lists)
    assert _rel(_flat_grads(params), w @ J) <= LIBMTL_TOL.get(name, 1e-4)
    assert all(g.grad is None for row in lists for g in row)  # the caller's tensors are untouched
    assert torch.equal(_matrix(lists), J)


@requires_libmtl
@pytest.mark.parametrize("name", list(peers.LIBMTL_METHODS))
def test_libmtl_full_backward_equals_aggregate_lists(name):
    """LibMTL's full path (its per-task backward passes) and the aggregation-only path agree on
    the gradients of the same losses."""
    num_tasks = 3
    params = [torch.randn(s, requires_grad=True) for s in SHAPES]
    host = peers.libmtl_host(name, params, num_tasks)
    gen = torch.Generator().manual_seed(5)
    targets = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(num_tasks)]

    def losses():
        return [sum(((p - c) ** 2).sum() * (t + 1) for p, c in zip(params, row)) / 10
                for t, row in enumerate(targets)]

    per_task = [list(torch.autograd.grad(loss, params)) for loss in losses()]
    random.seed(11)
    host.aggregate_lists(per_task)
    expected = _flat_grads(params)
    for p in params:
        p.grad = None
    host = peers.libmtl_host(name, params, num_tasks)  # fresh state (GradVac's targets)
    random.seed(11)
    host.backward(losses())
    assert _rel(_flat_grads(params), expected) <= 1e-5


def test_libmtl_bogus_path_is_unavailable(tmp_path):
    with pytest.raises(peers.PeerUnavailable, match="no LibMTL package"):
        peers.load_libmtl_weighting(str(tmp_path / "nowhere"))
    with pytest.raises(peers.PeerUnavailable):
        peers.libmtl_host("pcgrad", [torch.zeros(3, requires_grad=True)], 2, path=str(tmp_path))


@requires_libmtl
def test_libmtl_loads_without_its_package_init():
    weighting = peers.load_libmtl_weighting()
    assert hasattr(weighting, "PCGrad")
    assert "LibMTL.model" not in sys.modules and "torchvision" not in sys.modules


def test_libmtl_cagrad_needs_three_tasks():
    with pytest.raises(peers.PeerUnavailable, match="3 tasks"):
        peers.libmtl_host("cagrad", [torch.zeros(3, requires_grad=True)], 4)


ROW_KEYS = {"section", "T", "P", "dtype", "method", "library", "median_ms", "check", "note"}


def test_compare_aggregation_tiny_grid():
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = compare_aggregation.run(True, tasks=[3], sizes=[3000], num_params=4, log=lines.append)
    assert rows and all(set(r) == ROW_KEYS for r in rows)
    assert {r["section"] for r in rows} == {"aggregation"}
    assert {r["method"] for r in rows} == set(compare_aggregation.METHODS)
    libraries = {r["library"] for r in rows}
    assert "gradsurg[torch]" in libraries
    for r in rows:
        assert r["median_ms"] > 0 and r["T"] == 3 and r["P"] == 3000 and r["dtype"] == "float32"
        if r["library"] == "gradsurg[torch]":
            assert r["check"].startswith("n/a")
        elif r["method"] == "mgda" and r["library"] == "torchjd":
            pass  # Frank–Wolfe: may or may not land within 1e-3 (the note says why)
        else:
            assert r["check"].startswith("ok"), r
        if r["library"] in ("torchjd", "libmtl") and not r["check"].startswith("ok"):
            assert r["note"]
    if "torchjd" not in libraries:
        assert any(line.startswith("torchjd") for line in lines)
    if "libmtl" not in libraries:
        assert any(line.startswith("libmtl") for line in lines)


def test_unpaired_methods_are_unavailable():
    """The other benchmarks rely on PeerUnavailable for a method a peer does not define."""
    with pytest.raises(peers.PeerUnavailable, match="no aggregator paired"):
        peers.torchjd_pair("stch")
    with pytest.raises(peers.PeerUnavailable, match="no weighting paired"):
        peers.libmtl_host("upgrad", [torch.zeros(3, requires_grad=True)], 2)
    assert "no aggregator" in peers.torchjd_note("stch")
