"""Oracle of ``moco``: Fernando et al. 2023, Algorithm 1 (tracking + projected simplex step)."""

from __future__ import annotations

import numpy as np

from ._util import as_np as _np


def _simplex_projection_bisect(v: np.ndarray) -> np.ndarray:
    """argmin_{x∈Δ} ‖x − v‖: x = max(v − τ, 0) with Σ x = 1, τ found by bisection."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(v - mid, 0.0).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    x = np.maximum(v - 0.5 * (lo + hi), 0.0)
    return x / x.sum()


def moco(Js, beta: float, gamma: float, rho: float) -> list[np.ndarray]:
    """Fernando et al. 2023, Algorithm 1 (constant rates, no ball projection), y_i started at
    the first gradients: y_i ← y_i − β(y_i − g_i); λ ← Π_Δ(λ − γ(YYᵀ + ρI)λ); d = Σ_i λ_i y_i."""
    ys = None
    lam = None
    out = []
    for J in Js:
        J = _np(J)
        T = J.shape[0]
        if ys is None:
            ys = [J[i].copy() for i in range(T)]
            lam = np.full(T, 1.0 / T)
        else:
            ys = [ys[i] - beta * (ys[i] - J[i]) for i in range(T)]
        M = np.array([[ys[i] @ ys[j] for j in range(T)] for i in range(T)]) + rho * np.eye(T)
        lam = _simplex_projection_bisect(lam - gamma * M @ lam)
        out.append(sum(lam[i] * ys[i] for i in range(T)))
    return out
