"""``graddrop``: Gradient Sign Dropout (Chen et al. 2020, "Just Pick a Sign: Optimizing Deep
Multitask Models with Gradient Sign Dropout", NeurIPS, arXiv:2010.06808, Algorithm 1).

For every coordinate k of the shared parameters, with g_tk the task gradients:

    purity       P_k = ½ (1 + Σ_t g_tk / Σ_t |g_tk|)      (P_k = ½ when every g_tk = 0)
    sign choice  U_k ~ U(0, 1);  keep the positive components if U_k < P_k, else the negative
    mask         M_tk = 1[g_tk > 0] if positive kept, 1[g_tk < 0] otherwise
    update       d_k = Σ_t (ℓ + (1 − ℓ) M_tk) g_tk

ℓ is the paper's *leak*: the fraction of each task's gradient that always passes (ℓ = 0 pure
GradDrop, ℓ = 1 the plain sum; the paper allows one ℓ_t per task, gradsurg uses one for all).

Element-wise signs are not a function of G, so this is a :class:`MatrixMethod` working on J.
``combine_into`` walks J in column chunks (2^16 by default) so no T×P temporary is made. The
paper inserts GradDrop at an activation layer before the backward pass; like most libraries
gradsurg applies it to the shared parameters' gradients instead.

Randomness: the U_k come from the method's own CPU ``torch.Generator`` (seeded, saved in
``state_dict()``), drawn chunk by chunk in float64 and moved to J's device, so CPU and CUDA runs
with the same seed draw the same uniforms.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._seeded import Seeded
from .base import MatrixMethod

__all__ = ["GradDrop", "graddrop_combine"]


def graddrop_combine(matrix: Tensor, uniform: Tensor, leak: float = 0.0) -> Tensor:
    """GradDrop combination of ``matrix`` (T, P) for given uniforms ``uniform`` (P,)."""
    total = matrix.sum(dim=0)
    abs_total = matrix.abs().sum(dim=0)
    live = abs_total > 0
    purity = torch.where(live, 0.5 * (1.0 + total / torch.where(live, abs_total, 1.0)), 0.5)
    keep_pos = uniform.to(device=matrix.device, dtype=purity.dtype) < purity
    mask = torch.where(keep_pos, matrix > 0, matrix < 0)
    kept = torch.where(mask, matrix, 0.0).sum(dim=0)
    if leak == 0.0:
        return kept
    return leak * total + (1.0 - leak) * kept


class GradDrop(Seeded, MatrixMethod):
    """GradDrop (Chen et al. 2020).

    Args:
        leak: ℓ ∈ [0, 1], the fraction of every task gradient that is always kept.
        seed: seed of the generator drawing the U_k.
        chunk_size: columns of J processed at a time.

    Relabelling the tasks does not change the update for the same uniforms; a common positive
    scale of the gradients scales it. Sums (not means) the kept gradients, as the paper.
    """

    name = "graddrop"
    permutation_invariant = positively_homogeneous = True  # for the same uniforms

    def __init__(self, leak: float = 0.0, seed: int = 0, chunk_size: int = 1 << 16) -> None:
        super().__init__(seed=seed)
        if not (isinstance(leak, (int, float)) and 0.0 <= leak <= 1.0):
            raise ValueError(f"leak: must be in [0, 1], got {leak!r}")
        if not (isinstance(chunk_size, int) and chunk_size > 0):
            raise ValueError(f"chunk_size: must be a positive int, got {chunk_size!r}")
        self.leak = float(leak)
        self.chunk_size = chunk_size

    def draw(self, n: int) -> Tensor:
        """Draw ``n`` float64 uniforms on the CPU from the method's generator (one chunk)."""
        return torch.rand(n, generator=self.generator, dtype=torch.float64)

    @torch.no_grad()
    def combine_into(self, out: Tensor, matrix: Tensor, *, beta: float = 0.0) -> None:
        """``out ← beta·out + GradDrop(J)`` in place, chunk by chunk."""
        if matrix.dim() != 2 or out.shape != (matrix.shape[1],):
            raise ValueError(f"matrix: expected (T, P) with out of shape (P,), got {tuple(matrix.shape)}, {tuple(out.shape)}")
        num_cols = matrix.shape[1]
        for start in range(0, num_cols, self.chunk_size):
            stop = min(start + self.chunk_size, num_cols)
            u = self.draw(stop - start).to(matrix.device)
            part = graddrop_combine(matrix[:, start:stop], u, self.leak).to(out.dtype)
            if beta == 0.0:
                out[start:stop].copy_(part)
            else:
                out[start:stop].mul_(beta).add_(part)

    def extra_repr(self) -> str:
        return f"leak={self.leak}, seed={self.seed}"
