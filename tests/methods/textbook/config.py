"""Oracle of ``config`` (Liu et al. 2025): ``np.linalg.pinv`` of the unit-gradient matrix times 1,
normalised, with length Σ_i g_iᵀ d_u."""

from __future__ import annotations

import numpy as np

from ._util import as_np as _arr


def config(J, rcond: float = 1e-6) -> np.ndarray:
    """ConFIG, Eq. 2: d_u = normalise(pinv(U) 1), d = (Σ_i g_iᵀ d_u) d_u.

    ``rcond`` 1e-6 on the singular values of U matches gradsurg's 1e-12 cut-off on the eigenvalues
    of the cosine matrix U Uᵀ.
    """
    J = _arr(J)
    norms = np.linalg.norm(J, axis=1)
    U = np.zeros_like(J)
    nz = norms > 0
    U[nz] = J[nz] / norms[nz, None]
    best = np.linalg.pinv(U, rcond=rcond) @ np.ones(J.shape[0])
    n = np.linalg.norm(best)
    if n == 0:
        return np.zeros(J.shape[1])
    du = best / n
    return float(np.sum(J @ du)) * du
