"""``gls``: Geometric Loss Strategy (Chennupati et al. 2019, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops,
arXiv:1904.08492).

The objective is the geometric mean of the task losses,

    L_GLS = (Π_t L_t)^{1/T} = exp((1/T) Σ_t log L_t),

computed in the log form for range safety. Its gradient with respect to the losses is
∂L_GLS/∂L_t = L_GLS / (T L_t): tasks with small losses get large weights, which makes the
objective invariant to a rescaling of any single loss (up to a constant factor).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LossWeighting

__all__ = ["GLS"]


class GLS(LossWeighting):
    """Geometric mean of the losses, ``exp(mean(log L_t))``. The losses must be positive
    (``ValueError("losses: ...")`` otherwise). ``last_weights`` is ``L_GLS / (T L_t)``."""

    name = "gls"
    permutation_invariant = positively_homogeneous = True

    def objective(self, losses: Tensor) -> Tensor:
        losses = losses.reshape(-1)
        self.check_num_tasks(losses.numel())
        values = losses.detach()
        if bool((values <= 0).any()):
            bad = [i for i, v in enumerate(values.tolist()) if v <= 0]
            raise ValueError(f"losses: gls needs positive losses; task(s) {bad} are <= 0: {values.tolist()}")
        out = torch.exp(torch.log(losses).mean())
        v64 = values.to(device="cpu", dtype=torch.float64)
        self.last_weights = torch.exp(torch.log(v64).mean()) / (v64.numel() * v64)
        return out
