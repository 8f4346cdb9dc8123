"""Independent textbook versions of UPGrad, DualProj, Aligned-MTL, ConFIG and Nash-MTL, used as
test oracles for gradsurg's Gram-space implementations.

Everything works on the EXPLICIT per-task gradients ``J`` (a ``(T, P)`` float64 array, one row
per task) and follows the papers' definitions in primal (parameter-space) form. Nothing here
imports ``gradsurg`` or uses G = J Jᵀ as the object being solved for.

* UPGrad / DualProj (Quinton & Rey 2024, arXiv:2406.16232): the projection of a vector g onto the
  dual cone C = {x : J x ≥ 0}, min ‖x − g‖² s.t. J x ≥ 0, computed two ways:
  ``project_dual_cone_enum`` — exact, by enumerating active sets S: the projection is the
  orthogonal projection of g onto null(J_S) for its own active set S, so among those candidates
  that are feasible the one nearest g is the answer; ``project_dual_cone_slsqp`` — scipy's SLSQP
  on the primal problem (the generic-solver check of the enumeration).
* Aligned-MTL (Senushkin et al. 2023): thin SVD J = U Σ Vᵀ, aligned rows σ·U Vᵀ.
* ConFIG (Liu et al. 2025): ``np.linalg.pinv`` of the unit-gradient matrix times 1, normalised,
  with length Σ_i g_iᵀ d_u.
* Nash-MTL (Navon et al. 2022): scipy root finding on α_i · g_iᵀ(Σ_j α_j g_j) = 1 (in log α so
  α > 0), with the combination formed explicitly in parameter space; existence (0 ∉ conv{g_i},
  i.e. some x has J x ≥ 1) is decided by an LP in parameter space.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog, minimize, root

__all__ = [
    "aligned_mtl",
    "config",
    "dualproj",
    "nash_mtl",
    "project_dual_cone_enum",
    "project_dual_cone_slsqp",
    "upgrad",
]


def _arr(J) -> np.ndarray:
    return np.asarray(J, dtype=np.float64)


def project_dual_cone_enum(J, g, feas_tol: float = 1e-10) -> np.ndarray:
    """Exact projection of ``g`` onto {x : J x ≥ 0} by active-set enumeration (T ≤ ~10)."""
    J, g = _arr(J), _arr(g)
    T = J.shape[0]
    scale = max(float(np.linalg.norm(J, axis=1).max()), 1e-300)
    scale *= max(float(np.linalg.norm(g)), 1e-300)
    best, best_dist = None, np.inf
    for k in range(T + 1):
        for S in itertools.combinations(range(T), k):
            if S:
                JS = J[list(S)]
                x = g - np.linalg.pinv(JS, rcond=1e-12) @ (JS @ g)
            else:
                x = g.copy()
            if np.all(J @ x >= -feas_tol * scale):
                dist = float(np.linalg.norm(x - g))
                if dist < best_dist - 1e-15 * scale:
                    best, best_dist = x, dist
    assert best is not None  # S = all tasks gives x ⟂ every g_i, always feasible
    return best


def project_dual_cone_slsqp(J, g) -> np.ndarray:
    """Projection of ``g`` onto {x : J x ≥ 0} by SLSQP on the primal problem."""
    J, g = _arr(J), _arr(g)
    s = max(float(np.linalg.norm(g)), 1e-300)
    gs = g / s
    res = minimize(
        lambda x: 0.5 * float((x - gs) @ (x - gs)),
        gs.copy(),
        jac=lambda x: x - gs,
        constraints=[{"type": "ineq", "fun": lambda x: J @ x, "jac": lambda x: J}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x * s


def upgrad(J, project=project_dual_cone_enum) -> np.ndarray:
    """UPGrad: (1/T) Σ_i π_C(g_i)."""
    J = _arr(J)
    return sum(project(J, J[i]) for i in range(J.shape[0])) / J.shape[0]


def dualproj(J, project=project_dual_cone_enum) -> np.ndarray:
    """DualProj: π_C(mean of the g_i)."""
    J = _arr(J)
    return project(J, J.mean(axis=0))


def aligned_mtl(J, scale_mode: str = "min", pref: str = "mean", rank_rtol=None) -> np.ndarray:
    """Aligned-MTL, Algorithm 1: singular values of J all replaced by σ, rows combined by p.

    ``rank_rtol``: singular values ≤ rank_rtol·σ_max count as zero (default √(1e3·T·eps), the
    square root of gradsurg's documented eigenvalue cut-off, since λ = σ²).
    """
    J = _arr(J)
    T = J.shape[0]
    if rank_rtol is None:
        rank_rtol = np.sqrt(1e3 * T * np.finfo(np.float64).eps)
    U, S, Vt = np.linalg.svd(J, full_matrices=False)
    p = np.full(T, 1.0 / T if pref == "mean" else 1.0)
    if S.max() <= 0:
        return np.zeros(J.shape[1])
    keep = S > rank_rtol * S.max()
    U, S, Vt = U[:, keep], S[keep], Vt[keep]
    lam = S**2
    if scale_mode == "min":
        sigma = S.min()
    elif scale_mode == "median":
        sigma = np.sqrt(np.sort(lam)[(len(lam) - 1) // 2])  # lower median, as torch.median
    else:
        sigma = np.sqrt(lam.mean())
    aligned = sigma * U @ Vt
    return p @ aligned


def config(J, rcond: float = 1e-6) -> np.ndarray:
    """ConFIG, Eq. 2: d_u = normalise(pinv(U) 1), d = (Σ_i g_iᵀ d_u) d_u.

    ``rcond`` 1e-6 on the singular values of U matches gradsurg's 1e-12 cut-off on the eigenvalues
    of the cosine matrix U Uᵀ.
    """
    J = _arr(J)
    norms = np.linalg.norm(J, axis=1)
    U = np.zeros_like(J)
    nz = norms > 0
    U[nz] = J[nz] / norms[nz, None]
    best = np.linalg.pinv(U, rcond=rcond) @ np.ones(J.shape[0])
    n = np.linalg.norm(best)
    if n == 0:
        return np.zeros(J.shape[1])
    du = best / n
    return float(np.sum(J @ du)) * du


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
