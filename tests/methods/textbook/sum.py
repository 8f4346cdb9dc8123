"""Oracle of ``sum``: linear scalarisation."""

from __future__ import annotations

import torch
from torch import Tensor

from ._util import as_f64


def sum_(J: Tensor) -> Tensor:
    """Plain sum of the task gradients, Σ_i g_i (the linear-scalarisation baseline)."""
    J = as_f64(J)
    out = torch.zeros(J.shape[1], dtype=torch.float64)
    for g in J:
        out = out + g
    return out
