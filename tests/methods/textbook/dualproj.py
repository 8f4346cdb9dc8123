"""Oracle of ``dualproj`` (Quinton & Rey 2024): the mean gradient projected onto the dual cone."""

from __future__ import annotations

import numpy as np

from ._util import as_np as _arr
from .upgrad import project_dual_cone_enum


def dualproj(J, project=project_dual_cone_enum) -> np.ndarray:
    """DualProj: π_C(mean of the g_i)."""
    J = _arr(J)
    return project(J, J.mean(axis=0))
