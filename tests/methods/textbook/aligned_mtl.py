"""Oracle of ``aligned_mtl`` (Senushkin et al. 2023): thin SVD J = U Σ Vᵀ, aligned rows σ·U Vᵀ."""

from __future__ import annotations

import numpy as np

from ._util import as_np as _arr


def aligned_mtl(J, scale_mode: str = "min", pref: str = "mean", rank_rtol=None) -> np.ndarray:
    """Aligned-MTL, Algorithm 1: singular values of J all replaced by σ, rows combined by p.

    ``rank_rtol``: singular values ≤ rank_rtol·σ_max count as zero (default √(1e3·T·eps), the
    square root of gradsurg's documented eigenvalue cut-off, since λ = σ²).
    """
    J = _arr(J)
    T = J.shape[0]
    if rank_rtol is None:
        rank_rtol = np.sqrt(1e3 * T * np.finfo(np.float64).eps)
    U, S, Vt = np.linalg.svd(J, full_matrices=False)
    p = np.full(T, 1.0 / T if pref == "mean" else 1.0)
    if S.max() <= 0:
        return np.zeros(J.shape[1])
    keep = rank_rtol * S.max() < S
    U, S, Vt = U[:, keep], S[keep], Vt[keep]
    lam = S**2
    if scale_mode == "min":
        sigma = S.min()
    elif scale_mode == "median":
        sigma = np.sqrt(np.sort(lam)[(len(lam) - 1) // 2])  # lower median, as torch.median
    else:
        sigma = np.sqrt(lam.mean())
    aligned = sigma * U @ Vt
    return p @ aligned
