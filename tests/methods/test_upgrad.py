"""``upgrad`` (gradsurg/methods/upgrad.py) vs. the textbook UPGrad (projections onto the dual
cone by active-set enumeration in parameter space), the oracle vs. SLSQP, and ``reg_eps``.

Tolerances (scale = T·max‖g_t‖):

* 1e-8·scale vs. the textbook. Both sides are exact (active-set QP on G vs. active-set
  enumeration with orthogonal projections in parameter space). The Gram side solves systems in
  G_PP whose condition number is the square of J_S's, so it loses up to ~κ(J_S)²·eps; for these
  families κ² ≤ ~1e4, giving ≤ 1e-12 — 1e-8 also absorbs the singular (duplicated/dependent)
  cases where the minimum-norm least-squares solve of a rank-deficient G_PP is accurate to
  ~1e-13 relative cut-off effects.
* SLSQP cross-check of the enumeration — 1e-6 relative: SLSQP is an iterative solver.
"""

from __future__ import annotations

import pytest
from _assertions import close_np, lib_update, requires_solver
from _families import FAMILIES, TS, make_family, scale_of
from textbook.upgrad import project_dual_cone_enum, project_dual_cone_slsqp, upgrad

from gradsurg.methods.upgrad import UPGrad, upgrad_weights


@pytest.mark.parametrize("T", [2, 3, 5])
@pytest.mark.parametrize("family", ["random", "conflicting", "one_zero"])
def test_enumeration_agrees_with_slsqp(family, T):
    J = make_family(family, T).numpy()
    for g in [*list(J), J.mean(axis=0)]:
        a = project_dual_cone_enum(J, g)
        b = project_dual_cone_slsqp(J, g)
        close_np(a, b, 1e-6 * max(float((g @ g) ** 0.5), 1.0), f"{family} T={T}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_upgrad_textbook(family, T):
    J = make_family(family, T).numpy()
    close_np(lib_update(upgrad_weights, J), upgrad(J), 1e-8 * scale_of(J), f"{family} T={T}")


def test_reg_eps_matches_regularised_problem():
    J = make_family("conflicting", 5)
    G = J @ J.T
    exact = upgrad_weights(G) @ J
    reg = UPGrad(reg_eps=1e-4).weights(G) @ J
    assert 0 < float((exact - reg).norm()) < 1e-2 * float(exact.norm()) + 1e-3


def test_argument_validation():
    with pytest.raises(ValueError, match=r"^reg_eps:"):
        UPGrad(reg_eps=-1.0)


def _dual_cone_grams():
    """Gram matrices for the compiled-vs-numpy check: random (half the tasks conflicting), norm
    ratios to 1e30, T > P (rank-deficient), duplicated rows, TorchJD's float32 property
    matrices."""
    import torch
    from test_hard_inputs import torchjd_like

    out = []
    gen = torch.Generator().manual_seed(1)
    for T, P in [(3, 5), (8, 20), (16, 200), (64, 200), (20, 10), (40, 25)]:
        J = torch.randn(T, P, generator=gen, dtype=torch.float64)
        J[: T // 2] *= -0.3
        out.append(J @ J.T)
        scales = 10.0 ** torch.empty(T, dtype=torch.float64).uniform_(-15, 15, generator=gen)
        out.append((scales[:, None] * J) @ (scales[:, None] * J).T)
    dup = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    dup = torch.cat([dup, -dup[:2], dup[:1]])
    out.append(dup @ dup.T)
    for kind, m, n, r in [("weak", 20, 10, 10), ("strong", 20, 10, 5), ("normal", 20, 10, 10)]:
        J = torchjd_like(kind, m, n, r, seed=3).double()
        out.append(J @ J.T)
    return out


@requires_solver("dual_cone_nnls")
@pytest.mark.parametrize("index", range(12 + 1 + 3))
@pytest.mark.parametrize("compare", ["upgrad", "dualproj"])
def test_compiled_and_numpy_projections_agree(index, compare, monkeypatch):
    # csrc/cpu/nnls.cpp follows _Factored's numpy steps; it declines the rows that need SVD
    # least squares, which then run in numpy anyway. The projections Jᵀw must agree to rounding.
    import torch

    from gradsurg.methods import _compiled
    from gradsurg.methods.dualproj import dualproj_weights
    G = _dual_cone_grams()[index]
    fn = upgrad_weights if compare == "upgrad" else dualproj_weights
    out = fn(G)
    monkeypatch.setattr(_compiled, "ENABLED", False)
    ref = fn(G)
    diff = out - ref
    norms = G.diagonal().clamp(min=0).sqrt()
    # relative to the inputs: the projections can be 0 (strongly stationary J, T > P)
    scale = float(ref.abs() @ norms + out.abs() @ norms + norms.max())
    assert float((diff @ G @ diff).clamp(min=0).sqrt()) <= 1e-9 * scale
    assert torch.isfinite(out).all()
