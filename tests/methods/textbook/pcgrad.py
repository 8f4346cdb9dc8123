"""Oracle of ``pcgrad``: Yu et al. 2020, Algorithm 1, with an explicit visiting order."""

from __future__ import annotations

import torch
from torch import Tensor

from ._util import as_f64


def pcgrad(J: Tensor, order: Tensor) -> Tensor:
    """PCGrad, Algorithm 1 of Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"
    (NeurIPS 2020, arXiv:2001.06782), with an explicit visiting order.

    For each task i: g_i^PC ← g_i; for each j ≠ i in ``order[i]``: if g_i^PC · g_j < 0 then
    g_i^PC ← g_i^PC − (g_i^PC · g_j) / ‖g_j‖² · g_j, where g_j is the ORIGINAL gradient of task j.
    The update is Σ_i g_i^PC (a sum, as in the paper). A zero g_j has g_i^PC · g_j = 0, so it is
    never projected on.
    """
    J = as_f64(J)
    T = J.shape[0]
    order = torch.as_tensor(order)
    total = torch.zeros(J.shape[1], dtype=torch.float64)
    for i in range(T):
        g = J[i].clone()
        for j in order[i].tolist():
            if j == i:
                continue
            gj = J[j]
            dot = float(torch.dot(g, gj))
            nsq = float(torch.dot(gj, gj))
            if dot < 0 and nsq > 0:
                g = g - (dot / nsq) * gj
        total = total + g
    return total
