"""``mgda`` (gradsurg/methods/mgda.py) vs. the brute-force min-norm point (active-set
enumeration on explicit vectors), KKT conditions, and the scale invariance of the weights.

Tolerance 1e-10·scale (scale = T·max‖g_t‖): both sides are exact (active-set / KKT linear
algebra); the min-norm point is unique and Lipschitz in the data. Weights are only unique for
linearly independent gradients, so they are compared only when G is well-conditioned; the
combined gradient always.
"""

from __future__ import annotations

import pytest
import torch
from _assertions import close, lib_weights, requires_solver
from _families import (
    FAMILIES,
    SETTINGS,
    TS,
    examples,
    gram,
    int_jacobians,
    make_family,
    nmax,
    scale_of,
    well_conditioned,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from textbook.mgda import mgda, mgda_weights

import gradsurg


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_textbook_mgda_kkt(family, T):
    J = make_family(family, T)
    w = mgda_weights(J)
    G = gram(J)
    s = scale_of(J) ** 2
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    assert float((G @ w - w @ G @ w).min()) >= -1e-12 * s


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_mgda(family, T):
    J = make_family(family, T)
    w = lib_weights("mgda", J)
    s = scale_of(J)
    close(w @ J, mgda(J), 1e-10 * s)
    # weights on the simplex and KKT (Sener & Koltun 2018): (G w)_j ≥ wᵀGw for all j.
    G = gram(J)
    assert float(w.min()) >= -1e-12 and abs(float(w.sum()) - 1) <= 1e-12
    assert float((G @ w - w @ G @ w).min()) >= -1e-12 * s**2


@settings(max_examples=examples(300), **SETTINGS)
@given(J=int_jacobians())
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
    close(w @ J, mgda(J), 1e-8 * nmax(J))


@settings(max_examples=examples(200), **SETTINGS)
@given(J=int_jacobians(scale=False), e=st.integers(-8, 8), mantissa=st.sampled_from([1.0, 3.0, 0.7]))
def test_weights_scale_invariant(J, e, mantissa):
    k = mantissa * 10.0**e
    m = gradsurg.get_method("mgda")
    w = m.weights(gram(J))
    w_k = m.weights(gram(k * J))
    assert torch.isfinite(w_k).all()
    # The update scales with the gradients (weights sum to 1).
    tol = 1e-10 * max(1.0, float(w.abs().sum())) * nmax(J)
    close((w_k @ (k * J)) / k, w @ J, tol, "mgda")
    if well_conditioned(J):
        close(w_k, w, 1e-8 * max(1.0, float(w.abs().max())), "mgda weights")


def _hard_grams():
    """Gram matrices of the hard inputs of the min-norm solver (norm ratios, cancellation,
    duplicates, T > P), and random ones up to T = 64."""
    out = []
    gen = torch.Generator().manual_seed(0)
    for T, P in [(3, 5), (8, 20), (16, 200), (64, 200), (20, 10), (64, 30)]:
        J = torch.randn(T, P, generator=gen, dtype=torch.float64)
        J[: T // 2] *= -0.3
        out.append(J @ J.T)
        scales = 10.0 ** torch.empty(T, dtype=torch.float64).uniform_(-15, 15, generator=gen)
        out.append((scales[:, None] * J) @ (scales[:, None] * J).T)
    out.append(torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1e14]], dtype=torch.float64))
    g = torch.tensor([[1.0, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.0, 1e-8, 0.0], [0.3, 0.2, 1e-3]], dtype=torch.float64)
    out.append(g @ g.T)
    dup = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    dup = torch.cat([dup, dup[:2]])
    out.append(dup @ dup.T)
    return out


@requires_solver("min_norm_weights")
@pytest.mark.parametrize("index", range(len(_hard_grams())))
def test_compiled_and_numpy_min_norm_solvers_agree(index):
    # csrc/cpu/minnorm.cpp follows _min_norm_numpy step for step; it declines (empty result)
    # where a corral needs SVD least squares, and then the numpy solver is the answer anyway.
    from gradsurg.methods import _compiled
    from gradsurg.methods._minnorm import _min_norm_numpy

    solver = _compiled.solver("min_norm_weights")
    G = _hard_grams()[index]
    ref = torch.from_numpy(_min_norm_numpy(G.numpy()))
    out = solver(G, 50 * G.shape[0], None)
    if out.numel() == 0:
        return
    norms = G.diagonal().sqrt()
    # the same point: ‖Σ (w − w_ref)_t g_t‖ at rounding level of the combination
    diff = out - ref
    assert float(diff @ G @ diff) <= (1e-12 * float(ref.abs() @ norms + out.abs() @ norms)) ** 2
    assert float(out.min()) >= 0 and abs(float(out.sum()) - 1) <= 1e-14
    # and a warm start from the answer's support changes nothing
    again = solver(G, 50 * G.shape[0], out)
    assert float((again - out) @ G @ (again - out)) <= (1e-12 * float(out.abs() @ norms)) ** 2
