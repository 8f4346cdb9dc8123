"""``sum``: plain linear scalarisation, the gradient of Σ_t L_t (no surgery)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GramMethod

__all__ = ["Sum"]


class Sum(GramMethod):
    """Weights ``w_t = 1``: the combined update is ``Σ_t g_t``, what ``sum(losses).backward()``
    gives. It is the baseline every surgery method is compared with."""

    name = "sum"
    permutation_invariant = positively_homogeneous = linear_under_scaling = True
    strongly_stationary = True

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return torch.ones(gram.shape[0], dtype=torch.float64)
