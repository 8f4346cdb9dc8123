"""Oracle of ``fairgrad``: Ban & Ji 2024, G w = w^(−1/α) solved in parameter space with scipy."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, root

from ._util import as_np as _np


def fairgrad(J, alpha: float) -> np.ndarray:
    """Ban & Ji 2024: find w > 0 with g_tᵀ d = w_t^{−1/α}, d = Σ_t w_t g_t (zero gradients: w_t = 0).

    scipy's ``root`` (Powell hybrid) in the variables u = log w, residuals in primal terms
    (inner products of each g_t with the explicit combined vector d), scaled by w_t^{1/α} so
    that they are O(1) whatever the size of w.
    """
    J = _np(J)
    live = np.linalg.norm(J, axis=1) > 1e-12 * max(np.linalg.norm(J, axis=1).max(), 1e-300)
    Jl = J[live]
    if Jl.shape[0] == 0:
        return np.zeros(J.shape[1])

    def residual(u):
        w = np.exp(u)
        d = Jl.T @ w
        return (Jl @ d) * w ** (1.0 / alpha) - 1.0

    # Start near the solution: minimise the convex potential ½‖Σ w_t g_t‖² − Σ h(w_t) (whose
    # stationarity conditions are the system) with L-BFGS-B, then polish with Powell's hybrid
    # method on the residuals.
    def potential(w):
        d = Jl.T @ w
        h = np.log(w).sum() if alpha == 1.0 else (w ** (1 - 1 / alpha)).sum() / (1 - 1 / alpha)
        return 0.5 * d @ d - h, Jl @ d - w ** (-1.0 / alpha)

    w0 = np.full(Jl.shape[0], 1.0 / np.linalg.norm(Jl, axis=1).max())
    pre = minimize(potential, w0, jac=True, method="L-BFGS-B", bounds=[(1e-12 * w0[0], None)] * Jl.shape[0],
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
    sol = root(residual, np.log(pre.x), method="hybr", options={"xtol": 1e-15})
    if np.abs(residual(sol.x)).max() > 1e-12:
        sol = root(residual, sol.x, method="lm", options={"xtol": 1e-15, "ftol": 1e-15, "maxiter": 20000})
    w = np.exp(sol.x)
    assert np.abs(residual(sol.x)).max() < 1e-9, sol
    return Jl.T @ w
