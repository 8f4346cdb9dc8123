"""Oracle of ``nash_mtl`` (Navon et al. 2022): scipy root finding on α_i · g_iᵀ(Σ_j α_j g_j) = 1
(in log α so α > 0), with the combination formed explicitly in parameter space; existence
(0 ∉ conv{g_i}, i.e. some x has J x ≥ 1) is decided by an LP in parameter space."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog, minimize, root

from ._util import as_np as _arr


def improving_direction_exists(J) -> bool:
    """Whether some x has g_iᵀx ≥ 1 for all (non-zero) i, i.e. 0 ∉ conv{g_i} (an LP in x)."""
    J = _arr(J)
    J = J[np.linalg.norm(J, axis=1) > 0]
    if J.shape[0] == 0:
        return False
    P = J.shape[1]
    s = float(np.linalg.norm(J, axis=1).max())
    bounds = [(-1e6, 1e6)] * P
    res = linprog(np.zeros(P), A_ub=-J / s, b_ub=-np.ones(J.shape[0]), bounds=bounds,
                  method="highs")
    return res.status == 0


def nash_mtl(J) -> tuple[np.ndarray, np.ndarray] | None:
    """Nash-MTL: α > 0 with α_i · g_iᵀ d = 1, d = Σ_j α_j g_j (zero gradients get α = 0).

    Returns ``(alpha, d)``, or ``None`` if no solution exists (0 ∈ conv of the non-zero g_i).
    """
    J = _arr(J)
    T = J.shape[0]
    nz = np.linalg.norm(J, axis=1) > 0
    if not improving_direction_exists(J):
        return None
    Jn = J[nz]

    def F(s):
        a = np.exp(s)
        d = Jn.T @ a  # the combined update, in parameter space
        return a * (Jn @ d) - 1.0

    def dF(s):
        a = np.exp(s)
        d = Jn.T @ a
        A = Jn @ Jn.T
        return np.diag(a * (Jn @ d)) + (a[:, None] * A) * a[None, :]

    # Start from the minimiser of the convex potential ½‖Σ α_i g_i‖² − Σ log α_i (whose
    # stationarity condition is the system above), then polish with root finding in log α.
    def pot(a):
        d = Jn.T @ a
        return 0.5 * float(d @ d) - float(np.sum(np.log(a))), Jn @ d - 1.0 / a

    n = np.linalg.norm(Jn, axis=1)
    a0 = 1.0 / (n * np.sqrt(Jn.shape[0]))
    warm = minimize(pot, a0, jac=True, method="L-BFGS-B", bounds=[(1e-12 * a, None) for a in a0],
                    options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    sol = root(F, np.log(warm.x), jac=dF, method="hybr", options={"xtol": 1e-15})
    alpha = np.zeros(T)
    alpha[nz] = np.exp(sol.x)
    assert np.abs(F(sol.x)).max() < 1e-8, "textbook Nash-MTL root finding failed"
    return alpha, J.T @ alpha
