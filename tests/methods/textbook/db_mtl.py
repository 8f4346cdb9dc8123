"""Oracle of ``db_mtl``: Lin et al. 2023 in gradsurg's norm-EMA form."""

from __future__ import annotations

import numpy as np

from ._util import as_np as _np


def db_mtl(Js, Ls, beta: float) -> list[np.ndarray]:
    """Lin et al. 2023 (gradsurg's norm-EMA form): for each step, ĝ_t = g_t / L_t,
    m_t ← β m_t + (1−β)‖ĝ_t‖, d = Σ_t (max_s m_s / m_t) ĝ_t (m_t = 0 ⇒ that task is dropped)."""
    m = None
    out = []
    for J, L in zip(Js, Ls):
        J = _np(J)
        L = np.asarray(L, dtype=np.float64)
        ghat = [J[t] / L[t] for t in range(J.shape[0])]
        n = np.array([np.sqrt(np.sum(g * g)) for g in ghat])
        m = (1.0 - beta) * n if m is None else beta * m + (1.0 - beta) * n
        d = np.zeros(J.shape[1])
        for t, g in enumerate(ghat):
            if m[t] > 0:
                d += (m.max() / m[t]) * g
        out.append(d)
    return out
