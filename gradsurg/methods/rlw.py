"""``rlw``: Random Loss Weighting (Lin et al. 2022, "Reasonable Effectiveness of Random
Weighting: A Litmus Test for Multi-Task Learning", TMLR, arXiv:2111.10603).

At every step the weights are drawn afresh from a standard normal and mapped to the simplex,

    z ~ N(0, I_T),   λ = softmax(z),   objective = Σ_t λ_t L_t,

with λ treated as constants (the paper's RLW with the normal distribution and softmax
normalisation, its default). The draws come from the method's own seeded generator, whose
state is checkpointed, so a resumed run sees the same weights as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._seeded import Seeded
from .base import LossWeighting

__all__ = ["RLW"]


class RLW(Seeded, LossWeighting):
    """Random loss weighting: ``w = softmax(z)``, ``z ~ N(0, I)`` at every call (Σ w = 1).

    Args:
        seed: seed of the method's own ``torch.Generator`` (in ``state_dict()``).
    """

    name = "rlw"
    # Not permutation invariant: the weights are drawn per task position.
    positively_homogeneous = linear_under_scaling = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed=seed)

    def loss_weights(self, losses: Tensor) -> Tensor:
        z = torch.randn(losses.numel(), generator=self.generator, dtype=torch.float64)
        return torch.softmax(z, dim=0)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
