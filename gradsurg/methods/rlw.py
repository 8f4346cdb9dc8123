"""``rlw``: Random Loss Weighting (Lin et al. 2022, "Reasonable Effectiveness of Random
Weighting: A Litmus Test for Multi-Task Learning", TMLR, arXiv:2111.10603).

At every step the weights are drawn afresh from a standard normal and mapped to the simplex,

    z ~ N(0, I_T),   λ = softmax(z),   objective = Σ_t λ_t L_t,

with λ treated as constants (the paper's RLW with the normal distribution and softmax
normalisation, its default). The draws come from the method's own seeded generator, whose
state is checkpointed, so a resumed run sees the same weights as an uninterrupted one.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from .base import LossWeighting

__all__ = ["RLW"]


class RLW(LossWeighting):
    """Random loss weighting: ``w = softmax(z)``, ``z ~ N(0, I)`` at every call (Σ w = 1).

    Args:
        seed: seed of the method's own ``torch.Generator`` (in ``state_dict()``).
    """

    name = "rlw"
    stateful = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def loss_weights(self, losses: Tensor) -> Tensor:
        z = torch.randn(losses.numel(), generator=self.generator, dtype=torch.float64)
        return torch.softmax(z, dim=0)

    def reset(self) -> None:
        """Re-seed the generator with ``seed``."""
        super().reset()
        self.generator.manual_seed(self.seed)

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus the generator's state."""
        return {**super().get_extra_state(), "generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
