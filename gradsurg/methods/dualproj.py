"""``dualproj``: projection of the mean gradient onto the dual cone (Quinton & Rey 2024,
"Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, the DualProj aggregator
of Section 3 / Appendix).

    DualProj(J) = π_C(ḡ),   ḡ = (1/T) Σ_i g_i,   C = {x : J x ≥ 0}.

By Proposition 1 of the paper, π_C(Jᵀu) = Jᵀ v* with v* ∈ argmin_{v ≥ u} ½ vᵀ G v; here
u = 1/T, and v* comes from the exact active-set solver of :mod:`gradsurg.methods._qp` (on a
Jacobi-scaled factor of G). When G is singular v* is not unique; the reported weights are the
minimum-norm point (in the Jacobi-scaled variables D v) of the solution set
{v ≥ 1/T : Jᵀv = DualProj(J)}, so w ≥ 1/T as the definition requires (g and −g: w = (½, ½)),
except where that takes a move along the null space larger than 10·‖D u‖ (matrices stationary up
to rounding), where the minimum-norm representation is reported (see :mod:`.upgrad`, :mod:`._qp`).
The update satisfies J·d ≥ 0, is invariant to relabelling the tasks and positively homogeneous.

Difference from TorchJD (``torchjd.aggregation.DualProj``): as for :mod:`.upgrad`, TorchJD
perturbs G (trace normalisation, ``reg_eps = 1e-4``, ``norm_eps = 1e-4`` zero threshold); gradsurg
solves the exact problem, and ``reg_eps > 0`` reproduces the regularisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._qp import dual_cone_weights
from .upgrad import DualConeMethod

__all__ = ["DualProj", "dualproj_weights"]


def dualproj_weights(gram: Tensor, reg_eps: float = 0.0) -> Tensor:
    """DualProj weights ``w`` (float64, ``(T,)``) with ``w @ J`` the projected mean gradient."""
    num_tasks = gram.shape[0]
    u = torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype)
    return dual_cone_weights(gram, u, reg_eps)


class DualProj(DualConeMethod):
    """DualProj (Quinton & Rey 2024): the mean gradient projected onto the dual cone of the task
    gradients (options: :class:`~gradsurg.methods.upgrad.DualConeMethod`)."""

    name = "dualproj"
    permutation_invariant = positively_homogeneous = True
    non_conflicting = strongly_stationary = True

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return dualproj_weights(gram, self.reg_eps)
