"""``config`` (gradsurg/methods/config.py) vs. the textbook ConFIG (pinv of the explicit
unit-gradient matrix), its equal positive cosines and the per-task scale invariance of its
direction.

Tolerance 1e-9·scale·κ² (scale = T·max‖g_t‖, κ = σ_max/σ_min of the unit-gradient matrix):
G_u⁺ vs. pinv(U).
"""

from __future__ import annotations

import numpy as np
import pytest
from _assertions import close_np, lib_update
from _families import FAMILIES, TS, gaussian_jacobians, make_family, scale_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textbook.config import config

from gradsurg.methods.config import config_weights

SET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_config_textbook(family, T):
    J = make_family(family, T).numpy()
    norms = np.linalg.norm(J, axis=1)
    U = J[norms > 0] / norms[norms > 0, None]
    s = np.linalg.svd(U, compute_uv=False) if U.size else np.ones(1)
    s = s[s > 1e-6 * s.max()]
    kappa = float(s.max() / s.min())
    got = lib_update(config_weights, J)
    close_np(got, config(J), 1e-9 * scale_of(J) * kappa**2, f"{family} T={T}")


@SET
@given(gaussian_jacobians())
def test_config_has_equal_positive_cosines(J):
    d = lib_update(config_weights, J)
    norms = np.linalg.norm(J, axis=1)
    if np.any(norms == 0) or np.linalg.norm(d) == 0:
        return
    U = J / norms[:, None]
    sv = np.linalg.svd(U, compute_uv=False)
    if sv.min() < 1e-3 * sv.max():
        return  # equal cosines are only guaranteed when pinv(U)·1 solves U x = 1 exactly
    cos = (U @ d) / np.linalg.norm(d)
    assert np.all(cos > 0)
    assert np.ptp(cos) <= 1e-9 * (sv.max() / sv.min()) ** 2


@SET
@given(gaussian_jacobians(), st.lists(st.floats(0.1, 10.0), min_size=6, max_size=6))
def test_direction_per_task_scale_invariance(J, c):
    """ConFIG's direction is unchanged when the task gradients are rescaled individually."""
    c = np.asarray(c[: J.shape[0]])
    Jc = c[:, None] * J
    u, uc = lib_update(config_weights, J), lib_update(config_weights, Jc)
    nu, nuc = np.linalg.norm(u), np.linalg.norm(uc)
    if nu > 1e-8 * scale_of(J) and nuc > 1e-8 * scale_of(Jc):
        # d_u depends on the unit vectors only; the length Σ g_iᵀd_u, which can be negative
        # when U x = 1 has no solution (dependent directions), may flip the sign of d.
        sign = 1.0 if float(uc @ u) >= 0 else -1.0
        close_np(sign * uc / nuc, u / nu, 1e-6, "config direction per-task scale")
