"""``sdmgrad``: Stochastic Direction-oriented Multi-objective Gradient descent (Xiao et al. 2023,
"Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms",
NeurIPS, arXiv:2305.18409).

SDMGrad regularises the MGDA sub-problem towards a target direction g0 (the mean gradient):

    w* = argmin_{w ∈ Δ}  ½‖g_w‖² + λ g_wᵀ g0,        g_w = Σ_t w_t g_t,

and steps along d = (g_w* + λ g0) / (1 + λ) (Algorithm 1; the division by 1 + λ keeps d a convex
combination of the task gradients, as in the paper and its code).

Exact solution on G. On the simplex Σ w_t = 1, so ½‖g_w + λ g0‖² = ½‖g_w‖² + λ g_wᵀ g0 +
const: w* is the min-norm point of the convex hull of the shifted vectors g_t + λ g0, whose Gram
matrix is G + λ(a 1ᵀ + 1 aᵀ) + λ²‖g0‖² 1 1ᵀ with a = G 1/T. gradsurg solves it exactly with
Wolfe's algorithm; the paper runs projected (stochastic) gradient descent on w.

Left out (documented): the stochastic parts. The paper estimates the w-gradient G w + λ G 1/T
with two *independent* mini-batches ξ, ξ' (g(ξ)ᵀ g(ξ') is an unbiased estimate of the Gram
matrix, g(ξ)ᵀ g(ξ) is not) and takes a few projected SGD steps on w per iteration, warm-started
from the previous w; the update then uses a third batch ζ. The "objective sampling" variant
SDMGrad-OS samples a subset of tasks. A Gram method sees one batch's G, so gradsurg solves the
deterministic sub-problem exactly on that G instead (same batch for w and the update); the
method is stateless.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._minnorm import min_norm_weights_np
from .base import GramMethod

__all__ = ["SDMGrad", "sdmgrad_weights"]


def sdmgrad_weights(gram: Tensor, lamda: float = 0.3) -> Tensor:
    """Weights ``v`` with ``v @ J = (g_w* + λ g0) / (1 + λ)``."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    num_tasks = g.shape[0]
    mean = np.full(num_tasks, 1.0 / num_tasks)
    a = g @ mean
    g0_sq = max(float(mean @ a), 0.0)
    shifted = g + lamda * (a[:, None] + a[None, :]) + (lamda * lamda) * g0_sq
    w = min_norm_weights_np(shifted)
    return torch.from_numpy((w + lamda * mean) / (1.0 + lamda))


class SDMGrad(GramMethod):
    """SDMGrad (Xiao et al. 2023), deterministic sub-problem solved exactly.

    Args:
        lamda: weight λ ≥ 0 of the pull towards the mean gradient (the paper tunes it in
            {0.1, 0.3, 0.5, …}); λ = 0 is MGDA, λ → ∞ the mean.

    The weights sum to 1. Invariant to a common positive scale of the gradients, equivariant
    under relabelling of the tasks.
    """

    name = "sdmgrad"
    permutation_invariant = positively_homogeneous = True

    def __init__(self, lamda: float = 0.3) -> None:
        super().__init__()
        if not (isinstance(lamda, (int, float)) and 0.0 <= lamda < float("inf")):
            raise ValueError(f"lamda: must be a finite number ≥ 0, got {lamda!r}")
        self.lamda = float(lamda)

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return sdmgrad_weights(gram, self.lamda)

    def extra_repr(self) -> str:
        return f"lamda={self.lamda}"
