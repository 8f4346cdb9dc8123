"""``config``: ConFIG, Conflict-Free Inverse Gradients (Liu et al., "ConFIG: Towards
Conflict-free Training of Physics Informed Neural Networks", ICLR 2025, arXiv:2408.11104, Eq. 2).

With the unit task gradients u_i = g_i/‖g_i‖ stacked in U (T×P), ConFIG takes the direction
whose cosine with every u_i is the same positive number,

    d_u = pinv(U) 1 / ‖pinv(U) 1‖,

and gives it the length of the sum of the projections of the task gradients on it:

    d = (Σ_i g_iᵀ d_u) d_u.

From G alone: with D = diag(‖g_i‖), U = D⁻¹ J and G_u = U Uᵀ = D⁻¹ G D⁻¹ (the cosine matrix),
pinv(U) = Uᵀ G_u⁺, so pinv(U) 1 = Jᵀ β with β = D⁻¹ G_u⁺ 1. Then ‖Jᵀβ‖² = βᵀ G β and
Σ_i g_iᵀ Jᵀβ = 1ᵀ G β, hence

    w = β · (1ᵀ G β) / (βᵀ G β),      d = wᵀ J.

A zero gradient has no direction: its row of U is 0 (as TorchJD's ``nan_to_num``), so it gets
no weight in β, but it still counts (with 0) in the length. If pinv(U) 1 = 0 (e.g. g_2 = −g_1)
the weights are 0. That happens exactly when 1 is orthogonal to the range of U (pinv(U) 1 =
pinv(U) P 1, P the projector on range(U)), e.g. parallel gradients with as many pointing one way
as the other. It is decided on ‖P 1‖ ≤ 1e-10·‖1‖, not on pinv(U) 1 itself: the previous version
normalised whatever rounding left of pinv(U) 1 (~1e-16) into a unit direction and returned an
update of full length along it, so the update was not linear under row scaling (TorchJD's
property, A(diag(αc₁ + βc₂) J) = α A(diag(c₁) J) + β A(diag(c₂) J), failed on a T = 4, P = 3
rank-1 float64 matrix whose rows point two one way and two the other; TorchJD returns ~1e-11).
When U x = 1 has no solution (dependent unit vectors, e.g. g_3 ∥ g_1 + g_2), pinv(U)·1 is only
its least-squares solution: the cosines are then not all equal, and the length
Σ_i g_iᵀ d_u may even be negative (the update then points along −d_u), as in the paper's and
TorchJD's formula. G_u⁺ drops eigenvalues ≤ 1e-12 · λ_max: below that the eigenvalues of a
computed G_u are rounding noise (torch.linalg.pinv on U cuts singular values at max(T, P)·eps
relative, i.e. eigenvalues at ~1e-28 relative, which only G's rounding hides; both agree unless
σ_min/σ_max of U lies in ~[1e-14, 1e-6]). When every entry of G is a float32 number (float32
gradients through the compiled Gram kernels, which sum float32 products; see :mod:`._precision`)
the cut is T·eps32·λ_max instead: there the null eigenvalues of G_u come out as ±1e-8, the
previous 1e-12 kept them, and pinv(U) 1 was their noise divided by 1e-8 — a different direction
for each rescaling of the rows, so TorchJD's linearity-under-scaling test failed on 5 of its
float32 matrices (T = 4, P = 3 of rank 2 and 3; T = 20, P = 100 of rank 19) through
``gradsurg.aggregate``. The update is positively homogeneous of degree 1 and
equivariant under relabelling of the tasks; the direction d_u is invariant to rescaling any
single task.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._precision import rank_rtol
from .base import GramMethod

__all__ = ["ConFIG", "config_weights"]

_RCOND = 1e-12
# ‖projection of 1 on range(U)‖ / ‖1‖ at or below which pinv(U) 1 counts as 0.
_ORTH_TOL = 1e-10


def config_weights(gram: Tensor) -> Tensor:
    """ConFIG weights ``w`` (float64, ``(T,)``) with ``w @ J`` the ConFIG update."""
    num_tasks = gram.shape[0]
    norms = gram.diagonal().clamp(min=0.0).sqrt()
    w = torch.zeros(num_tasks, dtype=gram.dtype)
    nz = norms > 0
    if not bool(nz.any()):
        return w
    inv = torch.where(nz, 1.0 / torch.where(nz, norms, 1.0), 0.0)
    cos = inv[:, None] * gram * inv[None, :]
    lam, vecs = torch.linalg.eigh(cos)
    # The rank decision follows G's own precision: a G with float32 entries (float32 gradients
    # through the compiled kernels) has null eigenvalues at ±1e-8·λ_max, which 1e-12 would keep
    # and divide by (see _precision).
    keep = lam > rank_rtol(gram, _RCOND) * float(lam.max())
    lam, vecs = lam[keep], vecs[:, keep]
    ones = torch.ones(num_tasks, dtype=gram.dtype)
    coef = vecs.T @ ones  # 1 in the eigenbasis of the range of U: its projection there
    if not float(coef.norm()) > _ORTH_TOL * num_tasks**0.5:
        # 1 ⟂ range(U): pinv(U) 1 = 0 exactly, and what is left is rounding noise, whose direction
        # must not be normalised into an update (see the module docstring).
        return w
    beta = inv * (vecs @ (coef / lam))
    norm_sq = float(beta @ gram @ beta)
    if not norm_sq > 0:
        return w
    return beta * (float(ones @ gram @ beta) / norm_sq)


class ConFIG(GramMethod):
    """ConFIG (Liu et al. 2025): the direction with equal cosine to every task gradient, with
    length Σ_i g_iᵀ d_u."""

    name = "config"
    permutation_invariant = positively_homogeneous = linear_under_scaling = True

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return config_weights(gram)
