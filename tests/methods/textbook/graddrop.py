"""Oracle of ``graddrop``: Chen et al. 2020, Algorithm 1, one coordinate at a time."""

from __future__ import annotations

import numpy as np

from ._util import as_np as _np


def graddrop(J, U, leak: float) -> np.ndarray:
    """Chen et al. 2020, Algorithm 1, one coordinate at a time with given uniforms."""
    J = _np(J)
    U = _np(U)
    T, P = J.shape
    d = np.zeros(P)
    for k in range(P):
        col = [float(J[t, k]) for t in range(T)]
        total = sum(col)
        abs_total = sum(abs(x) for x in col)
        purity = 0.5 * (1.0 + total / abs_total) if abs_total > 0 else 0.5
        positive = U[k] < purity
        acc = 0.0
        for x in col:
            kept = (x > 0) if positive else (x < 0)
            acc += leak * x + (1.0 - leak) * (x if kept else 0.0)
        d[k] = acc
    return d
