"""Oracle of ``upgrad`` (Quinton & Rey 2024, arXiv:2406.16232): the projection of a vector g onto
the dual cone C = {x : J x ≥ 0}, min ‖x − g‖² s.t. J x ≥ 0, computed two ways:
``project_dual_cone_enum`` — exact, by enumerating active sets S: the projection is the
orthogonal projection of g onto null(J_S) for its own active set S, so among those candidates
that are feasible the one nearest g is the answer; ``project_dual_cone_slsqp`` — scipy's SLSQP
on the primal problem (the generic-solver check of the enumeration). UPGrad averages the
projections of the rows."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from ._util import as_np as _arr


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
