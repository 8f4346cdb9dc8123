"""``moco`` (gradsurg/methods/moco.py) vs. the textbook MoCo (Algorithm 1 on explicit vectors),
its simplex weights and GradSurgery path.

Tolerance 1e-11·scale (scale = T·max‖g_t‖): the textbook's bisection projection is accurate to
~1e-15 in λ, so λ's error times ‖Y‖.
"""

from __future__ import annotations

import pytest
import torch
from _assertions import close
from _families import TS, int_jacobians, make_family, scale_of
from _models import check_end_to_end
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textbook.moco import moco

import gradsurg

F64 = torch.float64
FAMILIES = ["random", "conflicting", "aligned", "one_zero", "duplicated"]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_moco_vs_textbook(family, T, rho):
    Js = [make_family(family, T, extra=e) for e in range(4)]
    method = gradsurg.get_method("moco", beta=0.3, gamma=0.05, rho=rho, chunk_size=6)
    for step, (J, d) in enumerate(zip(Js, moco(Js, 0.3, 0.05, rho))):
        out = torch.zeros(J.shape[1], dtype=F64)
        method.combine_into(out, J)
        close(out, d, 1e-11 * scale_of(J), f"{family} T={T} step={step}")


@PROPS
@given(J=int_jacobians(max_T=4, max_P=10, max_exp=6), steps=st.integers(1, 4))
def test_finite_simplex_weights(J, steps):
    m = gradsurg.get_method("moco")
    for _ in range(steps):
        out = torch.zeros(J.shape[1], dtype=F64)
        m.combine_into(out, J)
        assert torch.isfinite(out).all()
        w = m.lamda
        assert torch.isfinite(w).all() and (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12


@pytest.mark.parametrize("kwargs, arg", [({"beta": 0.0}, "beta"), ({"gamma": -1.0}, "gamma"), ({"rho": -1.0}, "rho")])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}: "):
        gradsurg.get_method("moco", **kwargs)


def test_end_to_end():
    check_end_to_end("moco", lambda Js, Ls, m: (moco(Js, 0.5, 0.1, 0.0)[-1], 1e-11 * scale_of(Js[-1])))
