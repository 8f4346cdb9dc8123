"""``imtl_g`` (gradsurg/methods/imtl_g.py) vs. the paper's closed form and its defining
equal-projection property, on the named families, hypothesis inputs and regressions.

Tolerance max(1e-10, 1e3·eps·κ)·scale·max|α| (scale = T·max‖g_t‖, κ the condition number of
D Uᵀ): both sides solve the same linear system, whose backward-stable solution is accurate to
~eps·κ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _assertions import close, lib_weights
from _families import FAMILIES, SETTINGS, TS, examples, gram, int_jacobians, make_family, nmax, scale_of
from hypothesis import given, settings
from hypothesis import strategies as st
from textbook.imtl_g import imtl_g, imtl_g_alpha, imtl_g_by_definition

import gradsurg

F64 = torch.float64
EPS = float(np.finfo(np.float64).eps)


@pytest.mark.parametrize("family", ["random", "conflicting", "orthogonal", "dependent"])
@pytest.mark.parametrize("T", TS)
def test_textbook_imtl_equal_projection(family, T):
    J = make_family(family, T)
    alpha = imtl_g_alpha(J)
    g = alpha @ J
    u = J / torch.linalg.vector_norm(J, dim=1, keepdim=True)
    proj = u @ g
    assert abs(float(alpha.sum()) - 1) < 1e-12
    assert float(proj.max() - proj.min()) <= 1e-10 * scale_of(J) * float(alpha.abs().max())


def _imtl_tol(J: torch.Tensor) -> float:
    T = J.shape[0]
    if T == 1:
        return 1e-12 * scale_of(J)
    u = J / torch.linalg.vector_norm(J, dim=1, keepdim=True)
    DU = (J[0] - J[1:]) @ (u[0] - u[1:]).T
    kappa = float(torch.linalg.cond(DU))
    alpha = imtl_g_alpha(J)
    return max(1e-10, 1e3 * EPS * kappa) * scale_of(J) * max(1.0, float(alpha.abs().max()))


def _assert_equal_projection(J: torch.Tensor, g: torch.Tensor, w: torch.Tensor) -> None:
    norms = torch.linalg.vector_norm(J, dim=1)
    nz = norms > 0
    proj = (J[nz] @ g) / norms[nz]
    tol = 1e-10 * scale_of(J) * max(1.0, float(w.abs().max()))
    assert float(proj.max() - proj.min()) <= tol, proj


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_imtl_g(family, T):
    J = make_family(family, T)
    w = lib_weights("imtl_g", J)
    g = w @ J
    if T == 1:
        # IMTL-G with a single task is the task's own gradient: w = [1]. For a zero gradient
        # the contract's two rules ("T=1 → [1]", "zero gradients get weight 0") disagree on w
        # but not on the update, so only the update (zero) is checked there.
        if float(torch.linalg.vector_norm(J)) > 0:
            torch.testing.assert_close(w, torch.ones(1, dtype=F64), rtol=0, atol=1e-15)
        close(g, J[0], 1e-12 * scale_of(J))
        return
    if float(w.abs().sum()) == 0.0:
        # Contract: zero weights when the normaliser Σ pinv(G)·n vanishes; the update is then 0,
        # which must also be what the definition gives (compared below).
        pass
    else:
        assert abs(float(w.sum()) - 1) <= 1e-10
    _assert_equal_projection(J, g, w)
    if family in ("random", "conflicting", "orthogonal"):
        # Linearly independent, nonzero gradients: the paper's closed form is defined.
        close(g, imtl_g(J), _imtl_tol(J))
    elif family == "dependent":
        # Dependent gradients, yet every g_t ≠ 0 and D Uᵀ is invertible (checked): the paper's
        # closed form is defined and, being the equal-projection condition itself, is what a
        # "pinv version of the same" must reproduce. (T = 2, g_2 = −g_1: α = (½, ½), g = 0.)
        assert float(_imtl_tol(J)) < 1e-4 * scale_of(J), "D Uᵀ unexpectedly ill-conditioned"
        close(g, imtl_g(J), _imtl_tol(J))
    elif family == "one_zero":
        # u_t is undefined for the zero task, so the paper's formula is not defined on the full
        # set and the zero task's α is arbitrary (it multiplies the zero vector). The library's
        # pinv version gives it weight 0, so the rest sums to 1: that is the paper's formula on
        # the nonzero tasks.
        keep = torch.linalg.vector_norm(J, dim=1) > 0
        close(g, imtl_g(J[keep]), _imtl_tol(J[keep]))
    elif family == "duplicated":
        # u_1 − u_T = 0 makes D Uᵀ singular. The combined gradient is still unique: it is the
        # paper's formula on the de-duplicated (independent) set.
        close(g, imtl_g(J[:-1]), _imtl_tol(J[:-1]))
    elif family == "aligned":
        # All u_t are equal: every α with Σα = 1 has equal projections, so only the property
        # (checked above) and Σw = 1 are defined by the paper.
        pass


@pytest.mark.parametrize(
    "rows",
    [
        [[0.1], [-0.1], [0.1]],  # u = ±1: equal projections force g = 0
        [[0.1], [0.1], [-0.1], [-0.1]],  # same; here pinv(G)·n is pure rounding noise
        [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]],  # g3 = g1 + g2; paper formula: α = (1, 1, −1)
        [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],  # g3 = −g1; paper formula: α = (½, 0, ½)
    ],
)
@pytest.mark.parametrize("k", [1.0, 3.0, 1e-3])
def test_imtl_g_dependent_regression(rows, k):
    # In every case some α with Σα = 1 has equal projections on all u_t and the resulting
    # update is unique: g = 0 (the projections are all 0). For the 2-D cases D Uᵀ is invertible
    # and the paper's closed form itself gives g = 0. A zero-weight answer (the library's
    # "normaliser ≈ 0" convention) has the same update and is accepted.
    J = k * torch.tensor(rows, dtype=F64)
    defined = imtl_g_by_definition(J)
    assert defined is not None
    close(defined @ J, torch.zeros(J.shape[1], dtype=F64), 1e-12 * scale_of(J))
    if J.shape[1] == 2:
        close(imtl_g(J), torch.zeros(2, dtype=F64), 1e-12 * scale_of(J))
    w = lib_weights("imtl_g", J)
    tol = 1e-10 * scale_of(J) * max(1.0, float(w.abs().sum()))
    close(w @ J, torch.zeros(J.shape[1], dtype=F64), tol)


@settings(max_examples=examples(300), **SETTINGS)
@given(J=int_jacobians())
def test_imtl_g_equal_projection(J):
    """Whenever some α with Σα = 1 gives equal projections on all unit task gradients (IMTL-G's
    defining property), the library's weights must have that property. When no such α exists
    (e.g. g3 = (g1 + g2)/2 with g1, g2 independent) IMTL-G is undefined and only finiteness is
    required."""
    w = gradsurg.get_method("imtl_g").weights(gram(J))
    assert torch.isfinite(w).all()
    sol = imtl_g_by_definition(J)
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


@settings(max_examples=examples(200), **SETTINGS)
@given(J=int_jacobians(scale=False), e=st.integers(-8, 8), mantissa=st.sampled_from([1.0, 3.0, 0.7]))
def test_weights_scale_invariant(J, e, mantissa):
    # The minimum-norm α solving the equal-projection system does not depend on a common scale
    # (compared always, not only for well-conditioned G), and the update scales with J.
    k = mantissa * 10.0**e
    m = gradsurg.get_method("imtl_g")
    w = m.weights(gram(J))
    w_k = m.weights(gram(k * J))
    assert torch.isfinite(w_k).all()
    tol = 1e-10 * max(1.0, float(w.abs().sum())) * nmax(J)
    close((w_k @ (k * J)) / k, w @ J, tol, "imtl_g")
    close(w_k, w, 1e-8 * max(1.0, float(w.abs().max())), "imtl_g weights")


@pytest.mark.parametrize("k", [1.0, 3.0, 0.1, 1e6])
def test_imtl_g_scale_regression(k):
    # g = ±0.1 (P = 1): pinv(G)·n is exactly 0 in exact arithmetic (n ⟂ range(G)); at most
    # scales it is rounding noise, which must not be normalised into weights. By the
    # definition the update is 0 (u = ±1 forces equal projections 0), at every scale.
    J = k * torch.tensor([[0.1], [0.1], [-0.1], [-0.1]], dtype=F64)
    w = gradsurg.get_method("imtl_g").weights(gram(J))
    close(w @ J, torch.zeros(1, dtype=F64), 1e-10 * nmax(J) * max(1.0, float(w.abs().sum())))
