"""``mgda``: the Multiple-Gradient Descent Algorithm (Désidéri 2012; Sener & Koltun 2018,
"Multi-Task Learning as Multi-Objective Optimization", NeurIPS, arXiv:1810.04650).

The update is the min-norm point of the convex hull of the task gradients,

    w* = argmin_{w ∈ Δ} ‖Σ_t w_t g_t‖² = argmin_{w ∈ Δ} wᵀ G w,

a common descent direction for every task unless it is zero, in which case the parameters are
Pareto-stationary. gradsurg solves it exactly (Wolfe's min-norm-point algorithm on G) rather
than with the Frank-Wolfe iterations of the paper's code, which stop short of float64 precision.

Scale: every test and solve in :mod:`._minnorm` is relative to each gradient's own norm, so the
answer is exact for norms differing by up to 1e30 (Gram diagonals by 1e60). The earlier version
tested optimality against an absolute tolerance at the scale of the largest gradient and
stopped early once norms differed by ≳ 3e6 (T ≥ 3): for g = (1, 0, 0), (−1, 0, 0),
(0, 1e7, 0) it returned g_1, which conflicts with g_2, instead of the exact answer 0.
"""

from __future__ import annotations

from torch import Tensor

from ._minnorm import min_norm_weights
from .base import GramMethod

__all__ = ["MGDA"]


class MGDA(GramMethod):
    """MGDA: weights ``w`` on the simplex minimising ``‖wᵀ J‖``.

    The weights sum to 1, so the update has the scale of one task gradient (use a
    learning rate accordingly). Invariant to a common positive scale of the gradients and
    equivariant under relabelling of the tasks (up to ties between equal min-norm solutions).
    """

    name = "mgda"
    permutation_invariant = positively_homogeneous = non_conflicting = True

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return min_norm_weights(gram)
