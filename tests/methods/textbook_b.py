"""Independent textbook versions of fairgrad / sdmgrad / db_mtl / graddrop / excess_mtl on the
EXPLICIT per-task vectors J (T×P, float64 numpy/torch), never on G = J Jᵀ.

Each follows the paper's formula literally, with a general-purpose scipy solver where the paper
solves a sub-problem, so that it shares no code and no algorithm with the library.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize, root


def _np(J) -> np.ndarray:
    return J.detach().cpu().numpy().astype(np.float64) if isinstance(J, torch.Tensor) else np.asarray(J, dtype=np.float64)


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


def db_mtl(Js, Ls, beta: float) -> list[np.ndarray]:
    """Lin et al. 2023 (gradsurg's norm-EMA form): for each step, ĝ_t = g_t / L_t,
    m_t ← β m_t + (1−β)‖ĝ_t‖, d = Σ_t (max_s m_s / m_t) ĝ_t (m_t = 0 ⇒ that task is dropped)."""
    m = None
    out = []
    for J, L in zip(Js, Ls):
        J = _np(J)
        L = np.asarray(L, dtype=np.float64)
        ghat = [J[t] / L[t] for t in range(J.shape[0])]
        n = np.array([np.sqrt(np.sum(g * g)) for g in ghat])
        m = (1.0 - beta) * n if m is None else beta * m + (1.0 - beta) * n
        d = np.zeros(J.shape[1])
        for t, g in enumerate(ghat):
            if m[t] > 0:
                d += (m.max() / m[t]) * g
        out.append(d)
    return out


def graddrop(J, U, leak: float) -> np.ndarray:
    """Chen et al. 2020, Algorithm 1, one coordinate at a time with given uniforms."""
    J = _np(J)
    U = _np(U)
    T, P = J.shape
    d = np.zeros(P)
    for k in range(P):
        col = [float(J[t, k]) for t in range(T)]
        total = sum(col)
        abs_total = sum(abs(x) for x in col)
        purity = 0.5 * (1.0 + total / abs_total) if abs_total > 0 else 0.5
        positive = U[k] < purity
        acc = 0.0
        for x in col:
            kept = (x > 0) if positive else (x < 0)
            acc += leak * x + (1.0 - leak) * (x if kept else 0.0)
        d[k] = acc
    return d


def excess_mtl(Js, eta: float, warmup: int, eps: float = 1e-7) -> list[np.ndarray]:
    """He et al. 2024: AdaGrad diagonal Hessian, E_t = Σ_k g²/√(S+ε), α ← α·exp(η E/E⁰)
    normalised, uniform α during the warm-up whose mean E is E⁰. Returns the updates Σ α_t g_t."""
    S = None
    alpha = None
    wsum = None
    base = None
    out = []
    for step, J in enumerate(Js):
        J = _np(J)
        T = J.shape[0]
        if S is None:
            S = np.zeros_like(J)
            alpha = np.full(T, 1.0 / T)
            wsum = np.zeros(T)
        S = S + J * J
        E = np.array([np.sum(J[t] ** 2 / np.sqrt(S[t] + eps)) for t in range(T)])
        if step < warmup:
            wsum = wsum + E
        else:
            if base is None:
                base = wsum / warmup if warmup > 0 else E.copy()
            a = alpha * np.exp(eta * E / (base + eps))
            alpha = a / a.sum()
        out.append(J.T @ alpha)
    return out


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
