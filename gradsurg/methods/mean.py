"""``mean``: equal weighting, the gradient of (1/T) Σ_t L_t (no surgery)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GramMethod

__all__ = ["Mean"]


class Mean(GramMethod):
    """Weights ``w_t = 1/T``: the combined update is the mean task gradient (LibMTL's ``EW``,
    TorchJD's ``Mean``)."""

    name = "mean"
    permutation_invariant = positively_homogeneous = linear_under_scaling = True
    strongly_stationary = True

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        num_tasks = gram.shape[0]
        return torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
