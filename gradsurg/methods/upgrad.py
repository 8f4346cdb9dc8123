"""``upgrad``: Unconflicting Projection of Gradients (Quinton & Rey 2024, "Jacobian Descent for
Multi-Objective Optimization", arXiv:2406.16232, Section 3 / Eq. 5).

Every task gradient g_i is projected onto the dual cone C = {x : J x ≥ 0} of all the task
gradients (the vectors that conflict with none of them), and the projections are averaged:

    UPGrad(J) = (1/T) Σ_i π_C(g_i).

By Proposition 1 of the paper, π_C(Jᵀu) = Jᵀ v* with v* ∈ argmin_{v ≥ u} ½ vᵀ G v, G = J Jᵀ; for
g_i, u = e_i. So the weights are w = (1/T) Σ_i v*_i, and every v*_i comes from the exact
active-set solver of :mod:`gradsurg.methods._qp` (Lawson–Hanson on a Jacobi-scaled factor of G,
factored once for the T projections). When G is singular (T > P, dependent gradients) v*_i is
not unique; the reported v*_i is then the minimum-norm point (in the Jacobi-scaled variables
D v) of the solution set {v ≥ e_i : Jᵀv = π_C(g_i)}, so w ≥ 1/T componentwise as the definition
requires (g and −g: w = (1, 1)), it does not depend on the labelling of the tasks and stays O(1)
(the earlier Gram-space solver returned weights up to ~1e6 along the null space there, which a
float32 combination rounded into conflicts, and moved by 1e-3 under relabelling on TorchJD's
T = 20 > P = 10 property matrices). Exception: where reaching v ≥ e_i takes a move along the
null space larger than 10·‖g_i‖ (matrices weakly or strongly stationary up to rounding), the
minimum-norm representation of the projection is reported instead, below the bound (see
:mod:`._qp`); the update is the same.
The result satisfies J·d ≥ 0 (no task is harmed to first order), is invariant to relabelling the
tasks, and is positively homogeneous (scaling all gradients by s > 0 scales d by s).

Difference from TorchJD (``torchjd.aggregation.UPGrad``): TorchJD's default projector divides G by
its trace, adds ``reg_eps = 1e-4`` times the identity and returns zero weights when the trace is
below ``norm_eps = 1e-4`` (an absolute threshold); this perturbs the result by about 1e-4
relative and zeroes small gradients. gradsurg solves the unperturbed problem (duplicated or
dependent gradients are handled exactly, see ``_qp``); ``reg_eps > 0`` reproduces TorchJD's
regularisation of G (its ``norm_eps`` threshold is not reproduced).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._qp import dual_cone_weights_many
from .base import GramMethod

__all__ = ["DualConeMethod", "UPGrad", "upgrad_weights"]


def upgrad_weights(gram: Tensor, reg_eps: float = 0.0) -> Tensor:
    """UPGrad weights ``w`` (float64, ``(T,)``); ``w @ J`` is the mean projected gradient."""
    num_tasks = gram.shape[0]
    eye = torch.eye(num_tasks, dtype=gram.dtype)
    return dual_cone_weights_many(gram, eye, reg_eps).sum(dim=0) / num_tasks


class DualConeMethod(GramMethod):
    """Shared options of the dual-cone projections (UPGrad, DualProj).

    Args:
        reg_eps: ``0`` (default) is the exact projection; a positive value reproduces TorchJD's
            regularisation (G divided by its trace, plus ``reg_eps·I``).
    """

    def __init__(self, reg_eps: float = 0.0) -> None:
        super().__init__()
        if isinstance(reg_eps, bool) or not (isinstance(reg_eps, (int, float)) and 0 <= reg_eps < float("inf")):
            raise ValueError(f"reg_eps: must be a finite number ≥ 0, got {reg_eps!r}")
        self.reg_eps = float(reg_eps)

    def extra_repr(self) -> str:
        return f"reg_eps={self.reg_eps}"


class UPGrad(DualConeMethod):
    """UPGrad (Quinton & Rey 2024): the mean of the projections of the task gradients onto the
    dual cone of all of them (options: :class:`DualConeMethod`)."""

    name = "upgrad"
    permutation_invariant = positively_homogeneous = linear_under_scaling = True
    non_conflicting = strongly_stationary = True

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return upgrad_weights(gram, self.reg_eps)
