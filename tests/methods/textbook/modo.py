"""Oracle of ``modo``: MoDo's λ step on explicit task-gradient vectors (Chen et al., "Three-Way
Trade-Off in Multi-Objective Learning", JMLR 2024, Algorithm 1 / Eq. (2.9a)):
λ ← Π_Δ(λ − γ (∇F₁ᵀ ∇F₂ λ + ρ λ)), with the projection onto the simplex found by bisection on
the threshold τ of Σ_t max(y_t − τ, 0) = 1 (not the library's sort)."""

from __future__ import annotations


def simplex_projection(y: list[float]) -> list[float]:
    """argmin_{x ∈ Δ} ‖x − y‖: x_t = max(y_t − τ, 0) with τ such that Σ x_t = 1 (bisection)."""
    lo, hi = min(y) - 1.0, max(y)  # Σ max(y − lo, 0) ≥ 1 ≥ Σ max(y − hi, 0) = 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if sum(max(v - mid, 0.0) for v in y) > 1.0:
            lo = mid
        else:
            hi = mid
    tau = 0.5 * (lo + hi)
    return [max(v - tau, 0.0) for v in y]


def modo_step(J1, J2, lam: list[float], gamma: float, rho: float) -> list[float]:
    """One λ update from the rows (task gradients) of two batches J1, J2 (equal for one batch)."""
    T = len(lam)
    # v = ∇F₂ λ = Σ_j λ_j g₂_j, then (∇F₁ᵀ v)_i = g₁_i · v
    v = [sum(lam[j] * float(J2[j][p]) for j in range(T)) for p in range(len(J2[0]))]
    grad = [sum(float(J1[i][p]) * v[p] for p in range(len(v))) + rho * lam[i] for i in range(T)]
    return simplex_projection([lam[i] - gamma * grad[i] for i in range(T)])


def modo(Js, gamma: float = 0.1, rho: float = 0.1) -> list[list[float]]:
    """The weights λ₁, λ₂, … of one-batch MoDo on the sequence of matrices ``Js`` (λ₀ = 1/T)."""
    T = len(Js[0])
    lam = [1.0 / T] * T
    out = []
    for J in Js:
        lam = modo_step(J, J, lam, gamma, rho)
        out.append(lam)
    return out
