"""Oracle of ``sdmgrad``: Xiao et al. 2023, the direction-oriented sub-problem by SLSQP."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from ._util import as_np as _np


def sdmgrad(J, lamda: float) -> np.ndarray:
    """Xiao et al. 2023: w = argmin_{w∈Δ} ½‖g_w‖² + λ g_wᵀ g0 by SLSQP; d = (g_w + λ g0)/(1+λ)."""
    J = _np(J)
    T = J.shape[0]
    g0 = J.mean(axis=0)

    def f(w):
        gw = J.T @ w
        return 0.5 * gw @ gw + lamda * gw @ g0

    def grad(w):
        gw = J.T @ w
        return J @ (gw + lamda * g0)

    # Scale the objective to O(1) so SLSQP's absolute ftol means the same for every family.
    s = max(float(np.abs(J @ J.T).max()), 1e-300)
    res = minimize(
        lambda w: f(w) / s,
        np.full(T, 1.0 / T),
        jac=lambda w: grad(w) / s,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * T,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(T)}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    w = res.x
    return (J.T @ w + lamda * g0) / (1.0 + lamda)
