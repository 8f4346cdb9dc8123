"""``excess_mtl`` (gradsurg/methods/excess_mtl.py) vs. the textbook ExcessMTL (the paper's
recursions on explicit vectors), its simplex weights and GradSurgery path.

Tolerance 1e-12·scale (scale = T·max‖g_t‖): the same closed-form recursions (sums, sqrt, exp);
only summation order differs.
"""

from __future__ import annotations

import pytest
import torch
from _assertions import close
from _families import TS, int_jacobians, make_family, scale_of
from _models import check_end_to_end
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textbook.excess_mtl import excess_mtl

import gradsurg

F64 = torch.float64
FAMILIES = ["random", "conflicting", "aligned", "one_zero", "duplicated"]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("warmup", [0, 2])
def test_excess_mtl_vs_textbook(family, T, warmup):
    Js = [make_family(family, T, extra=e) for e in range(4)]
    method = gradsurg.get_method("excess_mtl", robust_step_size=0.7, n_warmup_steps=warmup, chunk_size=5)
    expected = excess_mtl(Js, 0.7, warmup)
    for step, (J, d) in enumerate(zip(Js, expected)):
        out = torch.zeros(J.shape[1], dtype=F64)
        method.combine_into(out, J)
        close(out, d, 1e-12 * scale_of(J), f"{family} T={T} step={step}")


@PROPS
@given(J=int_jacobians(max_T=4, max_P=10, max_exp=6), steps=st.integers(1, 4))
def test_finite_simplex_weights(J, steps):
    m = gradsurg.get_method("excess_mtl")
    for _ in range(steps):
        out = torch.zeros(J.shape[1], dtype=F64)
        m.combine_into(out, J)
        assert torch.isfinite(out).all()
        w = m.alpha
        assert torch.isfinite(w).all() and (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12


@pytest.mark.parametrize(
    "kwargs, arg", [({"robust_step_size": 0.0}, "robust_step_size"), ({"n_warmup_steps": -1}, "n_warmup_steps")]
)
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}: "):
        gradsurg.get_method("excess_mtl", **kwargs)


def test_end_to_end():
    check_end_to_end("excess_mtl", lambda Js, Ls, m: (excess_mtl(Js, 1.0, 1)[-1], 1e-12 * scale_of(Js[-1])))
