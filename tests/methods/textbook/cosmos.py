"""Oracle of ``cosmos``: the COSMOS objective per loss (Ruchte & Grabocka 2021, "Scalable Pareto
Front Approximation for Deep Multi-Objective Learning", ICDM, Eq. (5)):
Σ_t r_t L_t − λ cos(r, L), with its gradient by the quotient rule, written loss by loss."""

from __future__ import annotations

import math


def cosmos(losses: list[float], preference: list[float], lam: float) -> tuple[float, list[float]]:
    """``(objective, ∂objective/∂L_t)``.

    With a = Σ r_t L_t, n_r = √Σ r_t², n_L = √Σ L_t²: cos = a / (n_r n_L) and
    ∂cos/∂L_t = r_t / (n_r n_L) − a L_t / (n_r n_L³). L = 0 has no direction: cos is taken as 0
    there, with no gradient.
    """
    a = sum(r * v for r, v in zip(preference, losses))
    n_r = math.sqrt(sum(r * r for r in preference))
    n_l = math.sqrt(sum(v * v for v in losses))
    if n_l == 0.0:
        return a, list(preference)
    cos = a / (n_r * n_l)
    grad = []
    for r, v in zip(preference, losses):
        d_cos = r / (n_r * n_l) - a * v / (n_r * n_l**3)
        grad.append(r - lam * d_cos)
    return a - lam * cos, grad
