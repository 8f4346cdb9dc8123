"""Oracle of ``pbi``: penalty-based boundary intersection per loss (Zhang & Li 2007, "MOEA/D: A
Multiobjective Evolutionary Algorithm Based on Decomposition", IEEE TEVC, Sec. II-C):
d₁ = (L − z*)ᵀw/‖w‖, d₂ = ‖L − z* − d₁ w/‖w‖‖, objective d₁ + θ d₂."""

from __future__ import annotations

import math


def pbi(losses: list[float], preference: list[float], theta: float,
        ideal: list[float] | None = None) -> tuple[float, list[float]]:
    """``(objective, ∂objective/∂L_t)``; ∂d₁/∂L_t = ŵ_t and ∂d₂/∂L_t = p_t/‖p‖ with p the
    perpendicular part (p ⊥ ŵ, so the projection's own derivative drops out). At p = 0 (L on the
    ray) d₂ has a kink and the oracle returns its zero subgradient."""
    ideal = [0.0] * len(losses) if ideal is None else ideal
    f = [v - z for v, z in zip(losses, ideal)]
    n_w = math.sqrt(sum(w * w for w in preference))
    unit = [w / n_w for w in preference]
    d1 = sum(a * b for a, b in zip(f, unit))
    perp = [a - d1 * u for a, u in zip(f, unit)]
    d2 = math.sqrt(sum(p * p for p in perp))
    if d2 == 0.0:
        return d1, unit
    return d1 + theta * d2, [u + theta * p / d2 for u, p in zip(unit, perp)]
