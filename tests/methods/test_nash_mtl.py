"""``nash_mtl`` (gradsurg/methods/nash_mtl.py) vs. the textbook Nash-MTL (root finding on the
explicit vectors, existence by an LP), the bargaining equation, per-task scale invariance,
state and clipping.

Tolerance 1e-8·‖d‖: both sides converge to residual ≤ 1e-12; the Jacobian of the system is
G + diag(1/α²) ≻ 0, which for these families has condition ≤ ~1e3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _assertions import close_np, lib_update
from _families import FAMILIES, TS, gaussian_jacobians, make_family
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textbook.nash_mtl import nash_mtl

from gradsurg.methods.nash_mtl import NashMTL, nash_mtl_weights

F64 = torch.float64
SET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_nash_mtl_textbook(family, T):
    J = make_family(family, T).numpy()
    got = lib_update(nash_mtl_weights, J)
    ref = nash_mtl(J)
    if ref is None:
        # No direction improves every task (e.g. g_2 = −g_1): no bargaining solution, weights 0.
        assert np.all(got == 0.0)
        return
    _alpha, d = ref
    close_np(got, d, 1e-8 * max(np.linalg.norm(d), 1e-300), f"{family} T={T}")


def test_nash_mtl_solves_the_bargaining_equation_exactly():
    J = make_family("random", 8)
    G = J @ J.T
    a = nash_mtl_weights(G)
    resid = (G @ a - 1.0 / a).abs().max() * a.abs().max()
    assert resid < 1e-12


@SET
@given(gaussian_jacobians(), st.lists(st.floats(0.1, 10.0), min_size=6, max_size=6))
def test_per_task_scale_invariance(J, c):
    """Nash-MTL's update is unchanged when the task gradients are rescaled individually
    (paper, Sec. 5)."""
    c = np.asarray(c[: J.shape[0]])
    d, dc = lib_update(nash_mtl_weights, J), lib_update(nash_mtl_weights, c[:, None] * J)
    close_np(dc, d, 1e-7 * max(np.linalg.norm(d), 1e-300), "nash per-task scale")


def test_nash_mtl_state_and_clipping():
    J1 = make_family("random", 3)
    J2 = make_family("conflicting", 3)
    G1, G2 = J1 @ J1.T, J2 @ J2.T
    m = NashMTL(max_norm=0.0, update_weights_every=2)
    w1 = m.weights(G1)
    torch.testing.assert_close(w1, nash_mtl_weights(G1), rtol=0, atol=0)
    sd = m.state_dict()
    w2 = m.weights(G2)  # reused α (no update on the second call)
    torch.testing.assert_close(w2, w1, rtol=0, atol=0)
    m2 = NashMTL(max_norm=0.0, update_weights_every=2)
    m2.load_state_dict(sd)
    torch.testing.assert_close(m2.weights(G2), w1, rtol=0, atol=0)
    torch.testing.assert_close(m.weights(G2), nash_mtl_weights(G2), rtol=0, atol=0)
    with pytest.raises(ValueError):
        m.weights(torch.eye(4, dtype=F64))
    m.reset()
    m.weights(torch.eye(4, dtype=F64))
    clipped = NashMTL(max_norm=0.01).weights(G1)
    assert float(clipped @ G1 @ clipped) ** 0.5 == pytest.approx(0.01, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, arg", [({"max_norm": -1.0}, "max_norm"), ({"update_weights_every": 0}, "update_weights_every")]
)
def test_argument_validation(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}:"):
        NashMTL(**kwargs)
