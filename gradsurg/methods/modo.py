"""``modo``: Multi-objective gradient with Double sampling (Chen, Fernando, Ying & Chen, "Three-Way
Trade-Off in Multi-Objective Learning: Optimization, Generalization and Conflict-Avoidance",
NeurIPS 2023 / JMLR 25 (2024), arXiv:2305.20057, Eq. (2.9)).

MoDo replaces MGDA's exact min-norm solve by one projected gradient step per iteration on the
regularised MGDA objective ½‖∇F(x) λ‖² + ½ρ‖λ‖² over the simplex Δ, starting from λ₀ = 1/T:

    λ_{k+1} = Π_Δ( λ_k − γ ( ∇F(x_k; z₁)ᵀ ∇F(x_k; z₂) λ_k + ρ λ_k ) ),
    x_{k+1} = x_k − α ∇F(x_k; z₃) λ_{k+1},

where ∇F(x; z) is the (P, T) matrix of task gradients on the mini-batch z and Π_Δ the Euclidean
projection onto the simplex. The paper draws z₁, z₂, z₃ independently (its "double sampling":
E[G₁₂] = E[J₁]E[J₂]ᵀ is an unbiased estimate of ∇Fᵀ∇F because the two batches are independent).
The weights returned are λ_{k+1}; they sum to 1. ``gamma`` (γ) and ``rho`` (ρ) default to 0.1, as
in the authors' code and TorchJD.

One batch. Through :class:`~gradsurg.GradSurgery` a step sees one batch, so G = J Jᵀ of that
batch stands in for J₁J₂ᵀ, and the same batch also gives the update (z₁ = z₂ = z₃). That is a
biased estimate: E[g_i·g_j] = ∇f_i·∇f_j + tr Cov(g_i, g_j), so the gradient noise adds to G (the
variances on its diagonal), which pushes λ towards the tasks with the least noisy gradients; and
the paper's convergence and conflict-avoidance guarantees (which rest on the independence of the
two batches) do not apply.
One-batch MoDo is an approximate, warm-started MGDA (a projected-gradient step per iteration).
For the paper's algorithm, compute the cross product of two independent batches' task gradients
yourself and call ``MoDo.weights(J1 @ J2.T)`` (a non-symmetric square matrix is accepted), then
apply the weights to a third batch (or to the mean of the two), as TorchJD's examples do.

The projection is the sort-based one (Held, Wolfe & Crowder 1974; Duchi et al. 2008), applied to
y − max(y) (the projection is invariant under adding a constant to every entry), so that entries
of size ~1e60 (huge gradients) still resolve a weight of 1.

Differences from TorchJD 0.18 (``torchjd.aggregation.MoDoWeighting``): the same step, defaults and
initial λ; TorchJD's projection works on y directly (at |y| ≳ 1e16 the 1 of the simplex is lost to
rounding: it returns λ = 0 for y = (−1e17, −3e17, −2e17), measured), and TorchJD restarts from
1/T when the dtype or device of its input changes, while here λ is float64 on the host and the
task count may not change without :meth:`MoDo.reset`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._weight_state import WeightStateMethod

__all__ = ["MoDo", "project_onto_simplex"]


def project_onto_simplex(y: Tensor) -> Tensor:
    """The Euclidean projection of the float64 vector ``y`` onto {x ≥ 0, Σx = 1}."""
    shifted = y - y.max()
    u = torch.sort(shifted, descending=True).values
    css = torch.cumsum(u, dim=0) - 1.0
    ks = torch.arange(1, y.numel() + 1, dtype=y.dtype)
    # the largest k with u_k − (Σ_{j≤k} u_j − 1)/k > 0 (k = 1 always qualifies: u_1 = 0)
    k = int(torch.nonzero(u - css / ks > 0).max()) + 1
    tau = css[k - 1] / k
    return (shifted - tau).clamp(min=0.0)


class MoDo(WeightStateMethod):
    """MoDo (Chen et al.): one projected gradient step on λ per call, from λ₀ = 1/T.

    Args:
        gamma: γ > 0, the step size of the λ update (default 0.1).
        rho: ρ ≥ 0, the ℓ₂ regularisation of λ (default 0.1).

    State (in ``state_dict()``): λ. The number of tasks may not change without :meth:`reset`.
    """

    name = "modo"
    permutation_invariant = True

    def __init__(self, gamma: float = 0.1, rho: float = 0.1) -> None:
        super().__init__()
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < math.inf:
            raise ValueError(f"gamma: must be a finite number > 0, got {gamma!r}")
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 <= rho < math.inf:
            raise ValueError(f"rho: must be a finite number >= 0, got {rho!r}")
        self.gamma, self.rho = float(gamma), float(rho)

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        num_tasks = gram.shape[0]
        lam = self.lam if self.lam is not None else torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        # G @ λ, not λᵀ G: with the paper's cross product G = J₁J₂ᵀ this is J₁(J₂ᵀλ)
        self.lam = project_onto_simplex(lam - self.gamma * (gram @ lam + self.rho * lam))
        return self.lam.clone()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, rho={self.rho}"
