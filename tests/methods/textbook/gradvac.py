"""Oracle of ``gradvac``: Wang et al. 2021, Algorithm 1, with explicit order and EMA targets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._util import as_f64


def _cos(a: Tensor, b: Tensor) -> float:
    na = float(torch.linalg.vector_norm(a))
    nb = float(torch.linalg.vector_norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    c = float(torch.dot(a, b)) / (na * nb)
    return min(1.0, max(-1.0, c))


def gradvac(J: Tensor, order: Tensor, rho: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Gradient Vaccine, Wang et al. 2021, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models" (ICLR 2021, arXiv:2010.05874),
    Algorithm 1, with an explicit visiting order and the EMA targets φ̂ passed in and returned.

    For each task i: g_i^PC ← g_i; for each j ≠ i in ``order[i]``:
      φ = cos(g_i^PC, g_j) (0 if either norm is 0);
      if φ < φ̂_ij:  g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂_ij √(1−φ²) − φ √(1−φ̂_ij²))
                                          / (‖g_j‖ √(1−φ̂_ij²)) · g_j      (paper eq. 3)
      φ̂_ij ← (1−β) φ̂_ij + β φ   (φ measured before the correction).
    The update is Σ_i g_i^PC. When g_j = 0 the correction is a multiple of the zero vector and
    is skipped (it cannot change anything); when g_i^PC = 0 its coefficient is 0.

    Returns ``(combined, new_rho)``; the diagonal of ``rho`` is unused and copied unchanged.
    """
    J = as_f64(J)
    T = J.shape[0]
    order = torch.as_tensor(order)
    rho = torch.as_tensor(rho, dtype=torch.float64).clone()
    new_rho = rho.clone()
    total = torch.zeros(J.shape[1], dtype=torch.float64)
    for i in range(T):
        g = J[i].clone()
        for j in order[i].tolist():
            if j == i:
                continue
            gj = J[j]
            target = float(rho[i, j])
            phi = _cos(g, gj)
            if phi < target:
                norm_g = float(torch.linalg.vector_norm(g))
                norm_gj = float(torch.linalg.vector_norm(gj))
                if norm_g > 0 and norm_gj > 0:
                    coef = (
                        norm_g
                        * (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2))
                        / (norm_gj * math.sqrt(1 - target**2))
                    )
                    g = g + coef * gj
            new_rho[i, j] = (1 - beta) * target + beta * phi
        total = total + g
    return total, new_rho
