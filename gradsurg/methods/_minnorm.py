"""The exact min-norm point of a convex hull, computed from the Gram matrix of its vertices.

Wolfe's algorithm (P. Wolfe 1976, "Finding the nearest point in a polytope", Math. Programming
11:128-149) is an active-set method that ends after finitely many steps at the exact minimiser
of ‖Σ w_i g_i‖ over the simplex, up to the precision of the small linear solves it makes. It
only needs dot products, so it runs on G. MGDA uses it directly; CAGrad uses it on a shifted
Gram matrix. Frank-Wolfe, which several libraries use for MGDA, converges sublinearly and stops
short of float64 precision.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["min_norm_weights"]

# Relative tolerance of the optimality test min_j (G w)_j ≥ wᵀ G w, after G is scaled to a unit
# largest diagonal: a few hundred ulps, so that rounding in G w never makes the loop go on.
_KKT_TOL = 1e-13
# Coefficients of the affine minimiser at or below this count as leaving the corral.
_ZERO_TOL = 1e-15


def _affine_min_norm(gram_s: Tensor) -> Tensor:
    """Weights ``v`` (summing to 1) of the min-norm point of the affine hull of the corral."""
    k = gram_s.shape[0]
    kkt = gram_s.new_zeros(k + 1, k + 1)
    kkt[:k, :k] = gram_s
    kkt[:k, k] = 1.0
    kkt[k, :k] = 1.0
    rhs = gram_s.new_zeros(k + 1, 1)
    rhs[k] = 1.0
    # gelsd (SVD-based least squares) rather than solve: nearly affinely dependent corrals,
    # e.g. duplicated task gradients, make the system singular to working precision.
    sol = torch.linalg.lstsq(kkt, rhs, driver="gelsd").solution[:k, 0]
    return sol / sol.sum()


def min_norm_weights(gram: Tensor, max_iter: int | None = None) -> Tensor:
    """Weights on the simplex of the min-norm point of the convex hull of vectors with Gram ``gram``.

    Args:
        gram: float64 ``(T, T)`` positive semi-definite matrix.
        max_iter: cap on major iterations (default ``50 * T``); Wolfe's algorithm terminates
            finitely, the cap only guards against rounding-induced cycling.

    Returns:
        ``w`` (float64, ``(T,)``, ``w ≥ 0``, ``Σ w = 1``) minimising ``wᵀ G w``. If every vector
        is zero, every ``w`` is optimal and the uniform one is returned.
    """
    num_tasks = gram.shape[0]
    scale = gram.diagonal().max()
    if not scale > 0:
        return torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype)
    if num_tasks == 2:
        # Two vertices: the minimiser of ‖γ g_1 + (1−γ) g_2‖² on the segment has the closed form
        # γ = (G_22 − G_12) / ‖g_1 − g_2‖², clipped to [0, 1] (Sener & Koltun 2018, Alg. 1).
        diff = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1]
        if not diff > 0:  # g_1 = g_2: every point of the segment is the same vector
            return torch.full((2,), 0.5, dtype=gram.dtype)
        gamma = ((gram[1, 1] - gram[0, 1]) / diff).clamp(0.0, 1.0)
        return torch.stack([gamma, 1 - gamma])
    g = gram / scale
    w = torch.zeros(num_tasks, dtype=g.dtype)
    first = int(torch.argmin(g.diagonal()))
    w[first] = 1.0
    corral = [first]
    for _ in range(max_iter or 50 * num_tasks):
        gw = g @ w
        norm_sq = w @ gw
        j = int(torch.argmin(gw))
        if norm_sq - gw[j] <= _KKT_TOL or j in corral:
            break
        corral.append(j)
        while True:
            idx = torch.tensor(corral)
            v = _affine_min_norm(g[idx][:, idx])
            if bool((v > _ZERO_TOL).all()):
                w.zero_()
                w[idx] = v
                break
            # The affine minimiser leaves the simplex: walk from w towards it until the first
            # coefficient reaches zero, and drop the vertices whose coefficient did.
            w_s = w[idx]
            leaving = v <= _ZERO_TOL
            den = w_s - v
            ratio = torch.where(leaving & (den > 0), w_s / torch.where(den > 0, den, 1.0), 1.0)
            theta = ratio.min().clamp(0.0, 1.0)
            w_s = (1 - theta) * w_s + theta * v
            keep = w_s > _ZERO_TOL
            w.zero_()
            w[idx[keep]] = w_s[keep]
            w /= w.sum()
            corral = idx[keep].tolist()
    return w
