"""Oracle of ``mgda``: the exact min-norm point of the convex hull, by active-set enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor

from ._util import as_f64


def mgda_weights(J: Tensor, neg_tol: float = 1e-12) -> Tensor:
    """Exact MGDA weights: the min-norm point of the convex hull of the task gradients
    (Désidéri 2012; Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018, eq. 3: min_α ‖Σ α_t g_t‖² s.t. α ∈ simplex).

    Brute force: the min-norm point lies in the relative interior of some face conv{g_i : i∈S}
    with S affinely independent, and there it is also the min-norm point of the AFFINE hull of
    that face. For every non-empty S we solve the affine problem through its KKT system

        [ G_SS  1 ] [ w ]   [ 0 ]
        [ 1ᵀ    0 ] [ μ ] = [ 1 ]      (G_SS = J_S J_Sᵀ built from the explicit vectors)

    with least squares (singular when S is affinely dependent), keep solutions whose weights are
    all ≥ −neg_tol, and return the one of smallest norm. 2^T − 1 subsets: fine for T ≤ 10.
    The min-norm POINT is unique; the weights need not be (degenerate families).
    """
    J = as_f64(J)
    T = J.shape[0]
    # The weights are invariant to a common scale: work with max ‖g_i‖ = 1 so that the KKT
    # system (whose last row has entries 1) is well scaled for lstsq's relative cut-off.
    top = float(torch.linalg.vector_norm(J, dim=1).max())
    if top == 0.0:
        return torch.full((T,), 1.0 / T, dtype=torch.float64)  # every w is optimal
    Jn = (J / top).numpy()
    best_w = None
    best_sq = math.inf
    for size in range(1, T + 1):
        for S in itertools.combinations(range(T), size):
            JS = Jn[list(S)]
            K = np.zeros((size + 1, size + 1))
            K[:size, :size] = JS @ JS.T
            K[:size, size] = 1.0
            K[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
            wS = sol[:size]
            if np.any(wS < -neg_tol) or abs(wS.sum() - 1.0) > 1e-9:
                continue
            wS = np.clip(wS, 0.0, None)
            wS = wS / wS.sum()
            point = wS @ JS
            sq = float(point @ point)
            if sq < best_sq:
                best_sq = sq
                best_w = np.zeros(T)
                best_w[list(S)] = wS
    assert best_w is not None  # singletons are always feasible
    return torch.from_numpy(best_w)


def mgda(J: Tensor) -> Tensor:
    """Combined MGDA update: the min-norm point of conv{g_1, …, g_T} (see :func:`mgda_weights`)."""
    J = as_f64(J)
    return mgda_weights(J) @ J
