"""Oracle of ``mean``: equal weighting."""

from __future__ import annotations

from torch import Tensor

from ._util import as_f64
from .sum import sum_


def mean(J: Tensor) -> Tensor:
    """Mean of the task gradients, (1/T) Σ_i g_i."""
    J = as_f64(J)
    return sum_(J) / J.shape[0]
