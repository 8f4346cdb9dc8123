"""``sdmgrad`` (gradsurg/methods/sdmgrad.py) vs. the textbook SDMGrad (SLSQP on the explicit
vectors) and its limits (λ = 0 is MGDA, λ → ∞ the mean).

Tolerance 1e-6·scale (scale = T·max‖g_t‖): the textbook side is SLSQP (iterative, stops at ~1e-8
in w); the library side is the exact Wolfe solve; the combined vector is unique (strongly convex
in g_w).
"""

from __future__ import annotations

import pytest
import torch
from _assertions import close
from _families import TS, make_family, scale_of
from _models import check_end_to_end
from textbook.sdmgrad import sdmgrad

import gradsurg
from gradsurg.methods.sdmgrad import sdmgrad_weights

F64 = torch.float64
FAMILIES = ["random", "conflicting", "aligned", "one_zero", "duplicated"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("lamda", [0.0, 0.3, 2.0])
def test_sdmgrad_vs_textbook(family, T, lamda):
    J = make_family(family, T)
    w = gradsurg.get_method("sdmgrad", lamda=lamda).weights(J @ J.T)
    assert torch.isfinite(w).all() and (w >= -1e-15).all()
    assert abs(float(w.sum()) - 1.0) < 1e-12
    close(w @ J, sdmgrad(J, lamda), 1e-6 * scale_of(J), f"{family} T={T} lamda={lamda}")


def test_sdmgrad_limits():
    J = make_family("conflicting", 3)
    G = J @ J.T
    # λ = 0 is MGDA; huge λ tends to the mean.
    torch.testing.assert_close(sdmgrad_weights(G, 0.0), gradsurg.get_method("mgda").weights(G), rtol=0, atol=1e-12)
    torch.testing.assert_close(sdmgrad_weights(G, 1e8), torch.full((3,), 1 / 3, dtype=F64), rtol=0, atol=1e-7)


@pytest.mark.parametrize("kwargs", [{"lamda": -0.1}, {"lamda": float("nan")}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=r"^lamda: "):
        gradsurg.get_method("sdmgrad", **kwargs)


def test_end_to_end():
    check_end_to_end("sdmgrad", lambda Js, Ls, m: (sdmgrad(Js[-1], 0.3), 1e-6 * scale_of(Js[-1])))
