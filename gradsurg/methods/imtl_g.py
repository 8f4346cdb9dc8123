"""``imtl_g``: the gradient part of Impartial Multi-Task Learning (Liu et al. 2021, "Towards
Impartial Multi-task Learning", ICLR).

IMTL-G picks the update g = Σ_t α_t g_t with Σ_t α_t = 1 whose projections on all unit task
gradients u_t = g_t/‖g_t‖ are equal: g·u_t = k for every t. In Gram terms, with n_t = ‖g_t‖,

    G α = k n,    1ᵀ α = 1,

a (T+1)×(T+1) linear system in (α, k). When G is invertible its solution is the paper's closed
form α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹; gradsurg solves the system itself by least squares (minimum-norm
α), which also covers linearly dependent gradients: if n is not in the range of G, the only
equal-projection combinations have k = 0, i.e. g = 0 (e.g. g_3 = g_1 + g_2 gives α = (1, 1, −1)).
A zero task gradient has no direction u_t: it is left out of the system and gets α_t = 0, so
the other weights sum to 1 (the paper's formula on the non-zero tasks). If the system has no
solution (no combination with Σα = 1 has equal projections) the weights are 0: no shared update.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GramMethod

__all__ = ["IMTLG", "imtl_g_weights"]

# Singular values below this (relative, after scaling G to a unit largest diagonal) count as
# zero: float64 Gram matrices of dependent gradients carry rounding at the 1e-16 level.
_RCOND = 1e-12
# Residual above which the system is deemed inconsistent.
_RESIDUAL_TOL = 1e-8


def imtl_g_weights(gram: Tensor) -> Tensor:
    """IMTL-G weights α (float64, ``(T,)``, ``Σα = 1``) from the Gram matrix, or zeros if none exist."""
    num_tasks = gram.shape[0]
    scale = gram.diagonal().max()
    if not scale > 0:
        # Every gradient is zero: every α gives g = 0; the uniform one is the minimum-norm choice.
        return torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype)
    norms = (gram.diagonal() / scale).clamp(min=0.0).sqrt()
    keep = torch.nonzero(norms > 0).flatten()
    g = gram[keep][:, keep] / scale
    n = norms[keep]
    size = keep.numel()
    system = g.new_zeros(size + 1, size + 1)
    system[:size, :size] = g
    system[:size, size] = -n
    system[size, :size] = 1.0
    rhs = g.new_zeros(size + 1, 1)
    rhs[size] = 1.0
    solution = torch.linalg.lstsq(system, rhs, rcond=_RCOND, driver="gelsd").solution
    residual = (system @ solution - rhs).abs().max()
    alpha = torch.zeros(num_tasks, dtype=gram.dtype)
    if residual <= _RESIDUAL_TOL:
        alpha[keep] = solution[:size, 0]
    return alpha


class IMTLG(GramMethod):
    """IMTL-G: weights summing to 1 whose combination projects equally on every unit task
    gradient (zeros if no such combination exists). Invariant to a common positive scale of the
    gradients; equivariant under relabelling of the tasks."""

    name = "imtl_g"
    permutation_invariant = positively_homogeneous = True

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return imtl_g_weights(gram)
