"""``fairgrad`` (gradsurg/methods/fairgrad.py) vs. the textbook FairGrad (scipy's root finding
on the explicit vectors), its defining equation, scaling law and degenerate cases.

Tolerance 1e-8 relative to the update's norm: both sides solve the same nonlinear system with
different algorithms (Newton on G vs. scipy's Powell hybrid on J, whose xtol stops at
~1e-10..1e-12 relative). The solution is unique (strictly convex potential), so any formula
error is O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _assertions import close, requires_solver
from _families import TS, make_family
from _models import check_end_to_end
from textbook.fairgrad import fairgrad

import gradsurg
from gradsurg.methods.fairgrad import fairgrad_weights

F64 = torch.float64
FAMILIES = ["random", "conflicting", "aligned", "one_zero", "duplicated"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_vs_textbook(family, T, alpha):
    J = make_family(family, T)
    w = gradsurg.get_method("fairgrad", alpha=alpha).weights(J @ J.T)
    assert w.shape == (T,) and torch.isfinite(w).all() and (w >= 0).all()
    expected = fairgrad(J, alpha)
    close(w @ J, expected, 1e-8 * max(float(np.linalg.norm(expected)), 1e-300), f"{family} T={T} alpha={alpha}")
    live = torch.linalg.vector_norm(J, dim=1) > 0
    assert (w[live] > 0).all() and (w[~live] == 0).all()


@pytest.mark.parametrize("T", TS)
def test_fairgrad_solves_its_equation_and_scaling(T):
    J = make_family("random", T)
    G = J @ J.T
    for alpha in (0.5, 1.0, 3.0):
        w = fairgrad_weights(G, alpha)
        torch.testing.assert_close(G @ w, w.pow(-1.0 / alpha), rtol=1e-12, atol=0.0)
        # G → c² G multiplies w by c^(−2α/(1+α)) (module docstring).
        c = 7.0
        expected = w * c ** (-2 * alpha / (1 + alpha))
        torch.testing.assert_close(fairgrad_weights(c * c * G, alpha), expected, rtol=1e-10, atol=0.0)


def test_fairgrad_alpha_one_t2_closed_form():
    # Orthogonal g1, g2: (G w)_t = ‖g_t‖² w_t = 1/w_t ⇒ w_t = 1/‖g_t‖ (α = 1).
    J = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=F64)
    expected = torch.tensor([1 / 3, 2.0], dtype=F64)
    torch.testing.assert_close(fairgrad_weights(J @ J.T, 1.0), expected, rtol=1e-12, atol=0.0)


def test_fairgrad_pareto_stationary_gives_zero():
    # g_2 = −g_1 (and a zero gradient): 0 is in the hull, G w = w^(−1/α) has no solution.
    J = torch.tensor([[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    assert torch.equal(fairgrad_weights(J @ J.T, 1.0), torch.zeros(3, dtype=F64))
    assert torch.equal(fairgrad_weights(torch.zeros(2, 2, dtype=F64), 2.0), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": -1.0}, {"alpha": float("inf")}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=r"^alpha: "):
        gradsurg.get_method("fairgrad", **kwargs)


def test_end_to_end():
    def expected(Js, Ls, method):
        d = fairgrad(Js[-1], 1.0)
        return d, 1e-8 * float(np.linalg.norm(d))

    check_end_to_end("fairgrad", expected)


@requires_solver("fairgrad_solve")
@pytest.mark.parametrize("T", [2, 3, 5, 16, 64])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_compiled_and_numpy_fairgrad_agree(T, alpha, monkeypatch):
    # csrc/cpu/fairgrad.cpp follows _solve's Newton steps; both solve to a relative residual
    # of 1e-13, so the weights agree to ~1e-11 (the Hessian's conditioning).
    from gradsurg.methods import _compiled
    gen = torch.Generator().manual_seed(T)
    J = torch.randn(T, 3 * T, generator=gen, dtype=F64)
    J[0] *= 1e3
    G = J @ J.T
    out = fairgrad_weights(G, alpha)
    # the solver's own criterion: residual relative to the largest side (norms differ by 1e3)
    side = float(out.pow(-1.0 / alpha).max())
    torch.testing.assert_close(G @ out, out.pow(-1.0 / alpha), rtol=0.0, atol=1e-12 * side)
    monkeypatch.setattr(_compiled, "ENABLED", False)
    torch.testing.assert_close(out, fairgrad_weights(G, alpha), rtol=1e-10, atol=0.0)
