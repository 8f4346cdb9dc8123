"""config, upgrad and dualproj on TorchJD's own property matrices with a float32-precision Gram
(issue 21, "hard inputs"), and the weights the dual-cone methods report on singular Gram matrices.

Matrices: ``typical_matrices`` of TorchJD's tests/unit/aggregation/_inputs.py (0.17–0.18):
float32, drawn by its Normal/Strong/StrictlyWeak/NonWeak samplers from one generator seeded 0,
in that order. :func:`torchjd_typical_matrices` re-implements the sampling (same draws, same
order) and reproduces them bit for bit with torch's CPU generator. Properties and tolerances are
TorchJD's (_asserts.py, test_config.py / test_upgrad.py / test_dualproj.py): linearity under
scaling 1e-4 (ConFIG), permutation 5e-7 (UPGrad) and 2e-7 (DualProj), the global generator
seeded 0 before each check as its conftest does.

Gram: for float32 gradients the compiled kernels sum float32 products per column block, so every
entry of G is a float32 number accurate to ~eps32·‖g_i‖‖g_j‖ (gradsurg.aggregate's default path
on CPU). :func:`float32_gram` gives G that precision without the kernels (the exact Gram rounded
to float32) and the update is formed in float32, as the kernels do. Before the fix, config failed
linearity under scaling on 5 matrices (T = 4, P = 3 of rank 2, 3; T = 20, P = 100 of rank 19)
and dualproj / upgrad permutation invariance on the T = 20 > P = 10 strictly weak matrix.

Weights: by Proposition 1 of Quinton & Rey 2024 (arXiv:2406.16232) each projection is Jᵀv* with
v* ∈ argmin_{v ≥ u} ½vᵀGv, so DualProj's weights satisfy w ≥ 1/T and UPGrad's (the mean of the
v*_i, v*_i ≥ e_i) too. Checked with the projection's optimality certificate, which needs v ≥ u:
d = Jᵀv, v − u ≥ 0, J d ≥ 0 and (v − u)ᵀ(J d) = 0 make d the projection of Jᵀu.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from textbook.dualproj import dualproj
from textbook.upgrad import upgrad

import gradsurg
from gradsurg.methods import _precision
from gradsurg.methods._qp import dual_cone_weights
from gradsurg.methods.dualproj import dualproj_weights
from gradsurg.methods.upgrad import upgrad_weights

F64 = torch.float64
nrm = torch.nn.functional.normalize


# ----------------------------------------------------------------------------------------------
# TorchJD's property matrices
# ----------------------------------------------------------------------------------------------


def _orthonormal_complement(q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(q.shape[0], q.shape[0] - q.shape[1], generator=gen)
    return torch.linalg.qr(a - q @ (q.T @ a))[0]


def _orthonormal(dim: int, gen: torch.Generator) -> torch.Tensor:
    return _orthonormal_complement(torch.zeros(dim, 0), gen)


def _singular_values(rank: int, gen: torch.Generator) -> torch.Tensor:
    return torch.diag(torch.randn(rank, generator=gen).abs())


def _normal(m: int, n: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    u, vt = _orthonormal(m, gen), _orthonormal(n, gen)
    return u[:, :rank] @ _singular_values(rank, gen) @ vt[:rank]


def _strong(m: int, n: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    """Some v > 0 has vᵀJ = 0."""
    v = torch.randn(m, generator=gen).abs()
    u = _orthonormal_complement(nrm(v, dim=0)[:, None], gen)
    vt = _orthonormal(n, gen)
    return u[:, :rank] @ _singular_values(rank, gen) @ vt[:rank]


def _strictly_weak(m: int, n: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    """Some v ≥ 0 with zeros has vᵀJ = 0; no positive one does."""
    a = torch.randn(m, generator=gen).abs()
    split = int(torch.randint(1, m, (), generator=gen))
    order = torch.randperm(m, generator=gen)
    v, v2 = torch.zeros(m), torch.zeros(m)
    v[order[:split]] = nrm(a[order[:split]], dim=0)
    v2[order[split:]] = nrm(a[order[split:]], dim=0)
    pair = torch.stack([v, v2]).T
    u = torch.hstack([pair, _orthonormal_complement(pair, gen)])
    vt = _orthonormal(n, gen)
    return u[:, 1 : rank + 1] @ _singular_values(rank, gen) @ vt[:rank]


def _non_weak(m: int, n: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    """A positive left singular vector with a positive singular value: no v ≥ 0, v ≠ 0 has vᵀJ = 0."""
    a = torch.randn(m, generator=gen).abs()
    first = nrm(a, dim=0)[:, None]
    u = torch.hstack([first, _orthonormal_complement(first, gen)])
    vt = _orthonormal(n, gen)
    return u[:, :rank] @ _singular_values(rank, gen) @ vt[:rank]


NORMAL_DIMS = [(1, 1, 1), (4, 3, 1), (4, 3, 2), (4, 3, 3), (9, 11, 5), (9, 11, 9)]
ZERO_DIMS = [(1, 1), (4, 3), (9, 11)]
STATIONARY_DIMS = [(20, 10, 10), (20, 10, 5), (20, 10, 1), (20, 100, 1), (20, 100, 19)]


def torchjd_typical_matrices() -> dict[str, torch.Tensor]:
    """TorchJD's ``typical_matrices`` (zero, normal, strong, strictly weak, non-weak), by name."""
    gen = torch.Generator().manual_seed(0)
    drawn = [(f"normal-{m}x{n}r{r}", _normal(m, n, r, gen)) for m, n, r in NORMAL_DIMS]
    for kind, sampler in [("strong", _strong), ("weak", _strictly_weak), ("nonweak", _non_weak)]:
        drawn += [(f"{kind}-{m}x{n}r{r}", sampler(m, n, r, gen)) for m, n, r in STATIONARY_DIMS]
    zeros = [(f"zero-{m}x{n}", torch.zeros(m, n)) for m, n in ZERO_DIMS]
    return dict(zeros + drawn)


MATRICES = torchjd_typical_matrices()
NAMES = list(MATRICES)
# Where the methods failed before the fix (see the module docstring).
CONFIG_FAILED = ["normal-4x3r2", "normal-4x3r3", "strong-20x100r19", "weak-20x100r19", "nonweak-20x100r19"]
DUAL_CONE_FAILED = ["weak-20x10r10"]


def float32_gram(J: torch.Tensor) -> torch.Tensor:
    """G with the precision of the compiled kernels' Gram of float32 gradients (see the module
    docstring): the exact float64 Gram, rounded to float32."""
    J64 = J.double()
    return (J64 @ J64.T).float().double()


def float32_aggregator(name: str):
    """``J ↦ w @ J``, w from the method on :func:`float32_gram`, the combination in J's dtype."""
    method = gradsurg.get_method(name)
    return lambda J: J.T @ method.weights(float32_gram(J)).to(J.dtype)


def default_aggregator(name: str):
    """``gradsurg.aggregate`` with its default backend (the compiled kernels where built)."""
    return lambda J: gradsurg.aggregate(J, name)


def check_linear_under_scaling(agg, J: torch.Tensor, atol: float, rtol: float) -> None:
    torch.manual_seed(0)
    for _ in range(5):
        c1, c2 = torch.rand(J.shape[0]), torch.rand(J.shape[0])
        a, b = torch.rand(()), torch.rand(())
        expected = a * agg(torch.diag(c1) @ J) + b * agg(torch.diag(c2) @ J)
        torch.testing.assert_close(agg(torch.diag(a * c1 + b * c2) @ J), expected, atol=atol, rtol=rtol)


def check_permutation_invariant(agg, J: torch.Tensor, atol: float, rtol: float) -> None:
    torch.manual_seed(0)
    d = agg(J)
    for _ in range(5):
        torch.testing.assert_close(agg(J[torch.randperm(J.shape[0])]), d, atol=atol, rtol=rtol)


DUAL_CONE_TOL = {"upgrad": 5e-7, "dualproj": 2e-7}


def test_matrices_are_torchjd_s():
    # Ranks, and entries read off TorchJD's own _inputs.py (run on torch's CPU generator): a
    # re-implementation that drifted from TorchJD's draws would test other matrices.
    assert len(MATRICES) == 24 and all(J.dtype == torch.float32 for J in MATRICES.values())
    for name, J in MATRICES.items():
        if name.startswith("zero"):
            assert not bool(J.any())
            continue
        s = torch.linalg.svdvals(J.double())
        assert int((s > 1e-5 * s[0]).sum()) == int(name.split("r")[-1]), name
    # float32 QR and products round differently with the thread count: 1e-6, not bit-exact here.
    for name, entries in [("normal-1x1r1", [2.1787893772125244]),
                          ("weak-20x10r10", [-0.23529788851737976, -0.04758143052458763, 0.3205026686191559]),
                          ("nonweak-20x100r19", [-0.09049215912818909, -0.014544380828738213, 0.21043719351291656])]:
        got = MATRICES[name].reshape(-1)[: len(entries)].double()
        torch.testing.assert_close(got, torch.tensor(entries, dtype=F64), rtol=1e-6, atol=0, msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_config_linear_under_scaling_float32_gram(name):
    check_linear_under_scaling(float32_aggregator("config"), MATRICES[name], 1e-4, 1e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_dual_cone_permutation_invariant_float32_gram(method, name):
    tol = DUAL_CONE_TOL[method]
    check_permutation_invariant(float32_aggregator(method), MATRICES[name], tol, tol)


@pytest.mark.parametrize("name", CONFIG_FAILED)
def test_config_linear_under_scaling_through_aggregate(name):
    check_linear_under_scaling(default_aggregator("config"), MATRICES[name], 1e-4, 1e-4)


@pytest.mark.parametrize("name", DUAL_CONE_FAILED)
@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_dual_cone_permutation_invariant_through_aggregate(method, name):
    tol = DUAL_CONE_TOL[method]
    check_permutation_invariant(default_aggregator(method), MATRICES[name], tol, tol)


def test_float32_entries_set_the_rank_threshold():
    J = MATRICES["normal-4x3r3"]
    exact = J.double() @ J.double().T
    assert _precision.rank_rtol(exact, 1e-12) == 1e-12
    assert _precision.rank_rtol(float32_gram(J), 1e-12) == 4 * _precision.EPS32
    assert _precision.rank_rtol(float32_gram(J), 1e-3) == 1e-3  # never below the caller's floor


# ----------------------------------------------------------------------------------------------
# Weights of the dual-cone methods on singular Gram matrices: w ≥ 1/T, the same update
# ----------------------------------------------------------------------------------------------


def _rows(seed: int, T: int, P: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((T, P)) * rng.uniform(0.3, 3.0, size=(T, 1)))


_G = torch.tensor([[0.3, -1.2, 0.7, 2.0]], dtype=F64)
SINGULAR = {
    "opposite": torch.cat([_G, -_G]),
    "duplicated": torch.cat([_G, _G]),
    "duplicated_and_opposite": torch.cat([_G, _G, -2.0 * _G]),
    "opposite_beside_others": torch.cat([_G, -_G, _rows(1, 2, 4)]),
    "T5_P2": _rows(2, 5, 2),
    "T6_P3": _rows(3, 6, 3),
    "T8_P3": _rows(4, 8, 3),
    "T40_P10": _rows(5, 40, 10),
    "T64_P20": _rows(6, 64, 20),
}


def _certify_projection(J: torch.Tensor, u: torch.Tensor, v: torch.Tensor, msg: str) -> None:
    """d = Jᵀv is the projection of Jᵀu onto {x : J x ≥ 0}: v ≥ u, J d ≥ 0, (v − u)ᵀ(J d) = 0.
    Tolerance 1e-10 relative to Σ|v_i|·‖g_i‖: the solver's accuracy (its ridge of 1e-11 fixes the
    active set; measured ≤ 3e-11), not the rounding of the check (~1e-16)."""
    n = J.norm(dim=1)
    reach = float(v.abs() @ n)
    slack = (J @ (v @ J)) / n.clamp(min=1e-300)  # each task's component of d
    assert float((v - u).min()) >= 0.0, f"{msg}: v − u = {(v - u).tolist()}"
    assert float(slack.min()) >= -1e-10 * reach, f"{msg}: J d / ‖g‖ = {slack.tolist()}"
    assert float(((v - u) * n * slack).abs().max()) <= 1e-10 * reach**2, f"{msg}: complementarity"


@pytest.mark.parametrize("case", list(SINGULAR))
def test_dualproj_weights_satisfy_the_bound(case):
    J = SINGULAR[case]
    T = J.shape[0]
    w = dualproj_weights(J @ J.T)
    assert float(w.min()) >= 1.0 / T, w.tolist()
    _certify_projection(J, torch.full((T,), 1.0 / T, dtype=F64), w, case)
    if T <= 8:  # the textbook answer by active-set enumeration: the update did not change
        ref = dualproj(J.numpy())
        assert float(np.abs((w @ J).numpy() - ref).max()) <= 1e-12 * T * float(J.norm(dim=1).max())


@pytest.mark.parametrize("case", list(SINGULAR))
def test_upgrad_weights_satisfy_the_bound(case):
    J = SINGULAR[case]
    T = J.shape[0]
    G = J @ J.T
    w = upgrad_weights(G)
    assert float(w.min()) >= 1.0 / T, w.tolist()
    eye = torch.eye(T, dtype=F64)
    rows = torch.stack([dual_cone_weights(G, eye[i]) for i in range(T)])
    for i in range(T):  # each projection, then their mean is the reported w
        _certify_projection(J, eye[i], rows[i], f"{case} row {i}")
    torch.testing.assert_close(w, rows.mean(dim=0), rtol=0, atol=1e-15 * float(rows.abs().max()))
    if T <= 8:
        ref = upgrad(J.numpy())
        assert float(np.abs((w @ J).numpy() - ref).max()) <= 1e-12 * T * float(J.norm(dim=1).max())


def test_weights_of_opposite_and_duplicated_gradients():
    # The definition's minimum-norm points: g, −g: v*_1 = v*_2 = (1, 1) (UPGrad), v* = (½, ½)
    # (DualProj). Before: (0, 0) and (−2e-17, 2e-17). Duplicates: (½, ½) for both.
    for J, up, dp in [(SINGULAR["opposite"], [1.0, 1.0], [0.5, 0.5]), (SINGULAR["duplicated"], [0.5, 0.5], [0.5, 0.5])]:
        G = J @ J.T
        torch.testing.assert_close(upgrad_weights(G), torch.tensor(up, dtype=F64), rtol=0, atol=1e-15)
        torch.testing.assert_close(dualproj_weights(G), torch.tensor(dp, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("case", ["opposite_beside_others", "T8_P3", "T40_P10"])
@pytest.mark.parametrize("fn", [upgrad_weights, dualproj_weights], ids=["upgrad", "dualproj"])
def test_singular_weights_equivariant_and_scale_free(fn, case):
    # The reported point is unique (a minimum-norm point), so relabelling the tasks relabels the
    # weights and scaling every gradient by s leaves them unchanged.
    J = SINGULAR[case]
    w = fn(J @ J.T)
    perm = torch.roll(torch.arange(J.shape[0]).flip(0), 1)
    Jp = J[perm]
    atol = 1e-10 * max(1.0, float(w.abs().max()))  # the solver's accuracy, see _certify_projection
    torch.testing.assert_close(fn(Jp @ Jp.T), w[perm], rtol=0, atol=atol)
    torch.testing.assert_close(fn((3.0 * J) @ (3.0 * J).T), w, rtol=0, atol=atol)
