"""Property-based tests (hypothesis) of the gradsurg methods on random and degenerate inputs.

Gradients are built from small integers / 10 (so exact zeros, duplicates, opposite and
proportional rows come up naturally), then rows may be replaced by zero / copies / negated /
positive multiples of earlier rows, and everything is multiplied by 10^e, e ∈ [−8, 8].

Tolerances are relative to the data: ``nmax = max_t ‖g_t‖`` for vectors and ``nmax²`` for Gram
quantities. Where a method's WEIGHTS are only unique for linearly independent gradients
(MGDA's and CAGrad's simplex weights), weights are compared only when the Gram matrix is
well-conditioned; the combined gradient is compared always.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

try:  # tests/ as a package or as a rootdir on sys.path
    from tests import textbook as tb
except ImportError:  # pragma: no cover
    import textbook as tb

import gradsurg
from gradsurg.methods.pcgrad import pcgrad_weights

F64 = torch.float64
ALL = ["sum", "mean", "pcgrad", "gradvac", "cagrad", "mgda", "imtl_g"]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Multiply every max_examples for a longer soak run, e.g. GRADSURG_HYPOTHESIS_SCALE=20.
_SCALE = int(os.environ.get("GRADSURG_HYPOTHESIS_SCALE", "1"))


def examples(n: int) -> int:
    return n * _SCALE


@st.composite
def jacobians(draw, min_T: int = 1, max_T: int = 8, max_P: int = 12, scale: bool = True):
    T = draw(st.integers(min_T, max_T))
    P = draw(st.integers(1, max_P))
    ints = draw(hnp.arrays(np.int64, (T, P), elements=st.integers(-20, 20)))
    J = ints.astype(np.float64) / 10.0
    # Degenerate rows, each defined from an earlier row.
    for t in range(T):
        kind = draw(st.sampled_from(["keep", "keep", "keep", "zero", "dup", "neg", "multiple"]))
        if kind == "zero":
            J[t] = 0.0
        elif kind != "keep" and t > 0:
            src = draw(st.integers(0, t - 1))
            if kind == "dup":
                J[t] = J[src]
            elif kind == "neg":
                J[t] = -J[src]
            else:
                J[t] = draw(st.sampled_from([0.5, 2.0, 3.0, 7.0])) * J[src]
    if scale:
        J = J * 10.0 ** draw(st.integers(-8, 8))
    return torch.from_numpy(J)


def gram(J: torch.Tensor) -> torch.Tensor:
    return J @ J.T


def nmax(J: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(J, dim=1).max())


def well_conditioned(J: torch.Tensor, bound: float = 1e6) -> bool:
    G = gram(J)
    ev = torch.linalg.eigvalsh(G)
    return bool(ev[0] > 0) and float(ev[-1] / ev[0]) < bound


def assert_close(actual, expected, atol, msg=""):
    assert torch.isfinite(actual).all(), f"non-finite {actual} {msg}"
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol, msg=lambda m: f"{msg}\n{m}")


# --------------------------------------------------------------------------------------------
# MGDA: exact min-norm point
# --------------------------------------------------------------------------------------------


@settings(max_examples=examples(300), **SETTINGS)
@given(J=jacobians())
def test_mgda_is_min_norm_point(J):
    G = gram(J)
    w = gradsurg.get_method("mgda").weights(G)
    assert torch.isfinite(w).all()
    # on the simplex
    assert float(w.min()) >= -1e-15
    assert abs(float(w.sum()) - 1.0) <= 1e-12
    # KKT: (G w)_j ≥ wᵀGw − δ for every j (⇒ ‖g_v‖² ≥ ‖g_w‖² − 2δ for every v on the simplex),
    # with equality wherever w_j > 0 (w_j · slack_j ≈ 0).
    s2 = nmax(J) ** 2
    Gw = G @ w
    wGw = float(w @ Gw)
    slack = Gw - wGw
    assert float(slack.min()) >= -1e-11 * s2, (slack, s2)
    assert float((w * slack).abs().max()) <= 1e-11 * s2
    # and the point equals the brute-force (active-set enumeration) min-norm point
    assert_close(w @ J, tb.mgda(J), 1e-8 * nmax(J))


# --------------------------------------------------------------------------------------------
# PCGrad: two-task closed form
# --------------------------------------------------------------------------------------------


def pcgrad_two_tasks(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Yu et al. 2020 with T = 2: if g1·g2 < 0 each gradient is projected on the normal plane of
    the other (original) one,

        g1' = g1 − (g1·g2)/‖g2‖² g2,   g2' = g2 − (g1·g2)/‖g1‖² g1,

    so g1' + g2' = g1 + g2 − (g1·g2)(g1/‖g1‖² + g2/‖g2‖²); otherwise the sum g1 + g2.
    (g1·g2 < 0 implies both norms are nonzero.)"""
    d = float(g1 @ g2)
    if d < 0:
        return g1 + g2 - d * (g1 / float(g1 @ g1) + g2 / float(g2 @ g2))
    return g1 + g2


@settings(max_examples=examples(300), **SETTINGS)
@given(J=jacobians(min_T=2, max_T=2), seed=st.integers(0, 2**31 - 1))
def test_pcgrad_two_tasks_closed_form(J, seed):
    expected = pcgrad_two_tasks(J[0], J[1])
    # |coefficients| ≤ 2 on each g: a few ulps of ‖g1‖ + ‖g2‖.
    tol = 1e-12 * nmax(J)
    w = gradsurg.get_method("pcgrad", seed=seed).weights(gram(J))
    assert_close(w @ J, expected, tol, "PCGrad method")
    for order in ([[0, 1], [0, 1]], [[1, 0], [1, 0]], [[0, 1], [1, 0]]):
        w = pcgrad_weights(gram(J), torch.tensor(order))
        assert_close(w @ J, expected, tol, f"order {order}")
    # When the pair conflicts, the result no longer conflicts with either gradient.
    if float(J[0] @ J[1]) < 0:
        out = w @ J
        assert float(out @ J[0]) >= -1e-12 * nmax(J) ** 2
        assert float(out @ J[1]) >= -1e-12 * nmax(J) ** 2


# --------------------------------------------------------------------------------------------
# Every method: finite outputs on random and degenerate inputs at scales 1e-8 … 1e8
# --------------------------------------------------------------------------------------------


@settings(max_examples=examples(200), **SETTINGS)
@given(J=jacobians(), name=st.sampled_from(ALL))
def test_outputs_finite(J, name):
    m = gradsurg.get_method(name)
    for _ in range(2):  # stateful methods: the second call uses the state of the first
        w = m.weights(gram(J))
        assert w.shape == (J.shape[0],) and w.dtype == F64
        assert torch.isfinite(w).all(), (name, w)
        assert torch.isfinite(w @ J).all()
    # Sanity bounds on the update's size, in units of T·max‖g_t‖: sum ≤ 1, mean/MGDA ≤ 1/T
    # (loosely 1); PCGrad projections never lengthen a vector, ≤ 1; CAGrad
    # ‖g0 + c'ĝ‖/(1+c²) ≤ (1+c)/(1+c²)·‖g0‖ ≈ 1.21 for c = 0.4; GradVac with targets
    # |φ̂| ≤ β = 0.01 barely differs from PCGrad (2 is a loose bound).
    bound = {"sum": 1.0, "mean": 1.0, "pcgrad": 1.0, "gradvac": 2.0, "cagrad": 1.21, "mgda": 1.0}
    if name in bound:
        n = float(torch.linalg.vector_norm(w @ J))
        assert n <= bound[name] * J.shape[0] * nmax(J) * (1 + 1e-9) + 1e-300


@settings(max_examples=examples(20), **SETTINGS)
@given(name=st.sampled_from(ALL), T=st.integers(1, 8), P=st.integers(1, 12))
def test_all_zero_gradients(name, T, P):
    J = torch.zeros(T, P, dtype=F64)
    w = gradsurg.get_method(name).weights(gram(J))
    assert torch.isfinite(w).all()
    assert torch.equal(w @ J, torch.zeros(P, dtype=F64))


# --------------------------------------------------------------------------------------------
# Permutations of the tasks
# --------------------------------------------------------------------------------------------


@settings(max_examples=examples(500), **SETTINGS)
@given(
    J=jacobians(),
    name=st.sampled_from(["sum", "mean", "mgda", "imtl_g", "cagrad"]),
    data=st.data(),
)
def test_permutation_equivariance(J, name, data):
    T = J.shape[0]
    perm = torch.tensor(data.draw(st.permutations(range(T))), dtype=torch.int64)
    m = gradsurg.get_method(name)
    w = m.weights(gram(J))
    w_p = m.weights(gram(J[perm]))
    n = nmax(J)
    # The combined gradient does not depend on the labelling.
    # cagrad: the library's 1-D root solve stops at ~1e-14 relative; 1e-8 covers its
    # propagation. imtl_g: pinv weights can be large when G is nearly singular; errors scale
    # with Σ|w|.
    tol = {"cagrad": 1e-8, "imtl_g": 1e-10 * max(1.0, float(w.abs().sum()))}.get(name, 1e-10)
    assert_close(w_p @ J[perm], w @ J, tol * n, name)
    # The weights are relabelled the same way, where they are unique.
    if name in ("sum", "mean", "imtl_g") or well_conditioned(J):
        wtol = 1e-8 * max(1.0, float(w.abs().max()))
        assert_close(w_p, w[perm], wtol, f"{name} weights")


@settings(max_examples=examples(200), **SETTINGS)
@given(J=jacobians(), data=st.data())
def test_pcgrad_permutation_with_permuted_order(J, data):
    T = J.shape[0]
    order = torch.stack(
        [torch.tensor(data.draw(st.permutations(range(T))), dtype=torch.int64) for _ in range(T)]
    )
    perm = torch.tensor(data.draw(st.permutations(range(T))), dtype=torch.int64)
    inv = torch.argsort(perm)  # old index → new index
    # New task a is old task perm[a]; it visits the old tasks order[perm[a]], renamed.
    order_p = inv[order[perm]]
    out = pcgrad_weights(gram(J), order) @ J
    out_p = pcgrad_weights(gram(J[perm]), order_p) @ J[perm]
    assert_close(out_p, out, 1e-10 * J.shape[0] * nmax(J))
    # and both are the textbook algorithm
    assert_close(out, tb.pcgrad(J, order), 1e-10 * J.shape[0] * nmax(J))


# --------------------------------------------------------------------------------------------
# Common positive scale
# --------------------------------------------------------------------------------------------


@settings(max_examples=examples(400), **SETTINGS)
@given(
    J=jacobians(scale=False),
    name=st.sampled_from(["mgda", "imtl_g"]),
    e=st.integers(-8, 8),
    mantissa=st.sampled_from([1.0, 3.0, 0.7]),
)
def test_weights_scale_invariant(J, name, e, mantissa):
    k = mantissa * 10.0**e
    m = gradsurg.get_method(name)
    w = m.weights(gram(J))
    w_k = m.weights(gram(k * J))
    assert torch.isfinite(w_k).all()
    # The update scales with the gradients (weights sum to 1 for both methods).
    tol = 1e-10 * max(1.0, float(w.abs().sum())) * nmax(J)
    assert_close((w_k @ (k * J)) / k, w @ J, tol, name)
    if name == "imtl_g" or well_conditioned(J):
        assert_close(w_k, w, 1e-8 * max(1.0, float(w.abs().max())), f"{name} weights")


# --------------------------------------------------------------------------------------------
# IMTL-G: equal projections
# --------------------------------------------------------------------------------------------


@settings(max_examples=examples(300), **SETTINGS)
@given(J=jacobians())
def test_imtl_g_equal_projection(J):
    """Whenever some α with Σα = 1 gives equal projections on all unit task gradients (IMTL-G's
    defining property), the library's weights must have that property. When no such α exists
    (e.g. g3 = (g1 + g2)/2 with g1, g2 independent) IMTL-G is undefined and only finiteness is
    required."""
    w = gradsurg.get_method("imtl_g").weights(gram(J))
    assert torch.isfinite(w).all()
    sol = tb.imtl_g_by_definition(J)
    if sol is None:
        return
    n = nmax(J)
    if float(w.abs().sum()) == 0.0:
        # The library's "normaliser ≈ 0" answer (zero update). Acceptable only if the update
        # the definition gives is zero too (e.g. g2 = −g1 forces α = (½, ½), g = 0).
        tol = 1e-9 * max(1.0, float(sol.abs().sum())) * n
        assert float(torch.linalg.vector_norm(sol @ J)) <= tol
        return
    assert abs(float(w.sum()) - 1.0) <= 1e-10
    g = w @ J
    norms = torch.linalg.vector_norm(J, dim=1)
    nz = norms > 0
    proj = (J[nz] @ g) / norms[nz]
    if proj.numel():
        spread = float(proj.max() - proj.min())
        assert spread <= 1e-9 * max(1.0, float(w.abs().sum())) * n, (proj, w, sol)


# --------------------------------------------------------------------------------------------
# Deterministic regressions of counterexamples hypothesis found
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1.0, 3.0, 0.1, 1e6])
def test_imtl_g_scale_regression(k):
    # g = ±0.1 (P = 1): pinv(G)·n is exactly 0 in exact arithmetic (n ⟂ range(G)); at most
    # scales it is rounding noise, which must not be normalised into weights. By the
    # definition the update is 0 (u = ±1 forces equal projections 0), at every scale.
    J = k * torch.tensor([[0.1], [0.1], [-0.1], [-0.1]], dtype=F64)
    w = gradsurg.get_method("imtl_g").weights(gram(J))
    assert_close(w @ J, torch.zeros(1, dtype=F64), 1e-10 * nmax(J) * max(1.0, float(w.abs().sum())))


@pytest.mark.parametrize("perm", [[0, 1, 2, 3, 4], [0, 1, 2, 4, 3], [4, 3, 2, 1, 0]])
def test_cagrad_permutation_regression(perm):
    # a, a/2, c, a, −a: 0 is in the hull and −a makes the dual objective negative, so
    # g_w* = −a and the update is the same for every labelling.
    a = [0.1, 0.3, 0.3, 0.3, 0.3, 0.3]
    J = torch.tensor([a, [x / 2 for x in a], [0.3] * 6, a, [-x for x in a]], dtype=F64)
    expected = tb.cagrad(J, 0.4, 1)
    Jp = J[perm]
    w = gradsurg.get_method("cagrad").weights(gram(Jp))
    assert_close(w @ Jp, expected, 1e-5 * nmax(J))
