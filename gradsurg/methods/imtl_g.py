"""``imtl_g``: the gradient part of Impartial Multi-Task Learning (Liu et al. 2021, "Towards
Impartial Multi-task Learning", ICLR).

IMTL-G picks the update g = Σ_t α_t g_t with Σ_t α_t = 1 whose projections on all unit task
gradients u_t = g_t/‖g_t‖ are equal: g·u_t = const. In Gram terms, (G α)_t = k ‖g_t‖ for all t,
so α ∝ G⁻¹ n with n_t = ‖g_t‖ = √G_tt, normalised to sum 1. This equals the paper's closed form
α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹ whenever G is invertible; gradsurg uses the pseudo-inverse so that
linearly dependent (e.g. duplicated) gradients still give the min-norm solution.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Method

__all__ = ["IMTLG"]

# Below this (relative to Σ|α|) the normaliser Σα is treated as zero: no direction with equal
# positive projections exists and the weights are set to 0 (no shared update).
_SUM_RTOL = 1e-12


class IMTLG(Method):
    """IMTL-G: weights summing to 1 whose combination projects equally on every unit task
    gradient. Zero gradients get a zero weight. Invariant to a common positive scale of the
    gradients; equivariant under relabelling of the tasks."""

    name = "imtl_g"

    def _weights(self, gram: Tensor) -> Tensor:
        norms = gram.diagonal().clamp(min=0.0).sqrt()
        alpha = torch.linalg.pinv(gram, hermitian=True) @ norms
        total = alpha.sum()
        if not total.abs() > _SUM_RTOL * alpha.abs().sum():
            return torch.zeros_like(alpha)
        return alpha / total
