"""``cagrad``: Conflict-Averse Gradient descent (Liu et al. 2021, "Conflict-Averse Gradient
Descent for Multi-task Learning", NeurIPS, arXiv:2110.14048).

CAGrad looks for the update d in a ball around the mean gradient g0 that maximises the worst
task's improvement. With c' = c‖g0‖ its dual is

    w* = argmin_{w ∈ Δ}  g_wᵀ g0 + c' ‖g_w‖,        g_w = Σ_t w_t g_t,

and d = g0 + (c'/‖g_w*‖) g_w* (the paper's Eq. and Algorithm 1). The released code divides d by
1 + c² (``rescale=1``, its default), 1 + c (``rescale=2``) or nothing (``rescale=0``, which is
also TorchJD's definition).

Exact solution on G. At an optimum with s = ‖g_w*‖ > 0 the gradient of the objective equals
(1/u)(G w + u G 1/T) with u = s/c', which is the gradient of ½‖g_w + u g0‖² scaled by 1/u. So
w* is the min-norm point of the convex hull of the shifted vectors g_t + u g0 — an exact Wolfe
solve on a shifted Gram matrix — for the u solving ‖g_w(u)‖ = c' u, a one-dimensional root
found by bracketing: every root satisfies the KKT conditions of the convex problem, hence is
optimal. The bracket comes from halving u down from u_max = max‖g_t‖/c' (where the gap
‖g_w(u)‖ − c'u is ≤ 0) until the gap turns positive. When 0 is in the hull, ‖g_w(u)‖/u is
non-increasing (Zarantonello 1971, for projections onto a convex set containing the origin), so
a gap that stays ≤ 0 down to tiny u means no positive root: g_w* = 0 is optimal (e.g. c ≥ 1,
or −g0 pointing out of the hull at 0) and d = g0. Roots with ‖g_w*‖ below ``_ZERO_NORM`` ×
max‖g_t‖ are treated as that case, like TorchJD's ``norm_eps``: below it the min-norm solves
cannot resolve the direction of g_w*, on which d depends discontinuously.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._minnorm import min_norm_weights
from .base import GramMethod

__all__ = ["CAGrad", "cagrad_weights"]

_ROOT_RTOL = 1e-14
# ‖g_w*‖ / max‖g_t‖ below which g_w* counts as 0 (see the module docstring).
_ZERO_NORM = 1e-5


def _shifted_min_norm(gram: Tensor, a: Tensor, g0_sq: Tensor, u: float) -> tuple[Tensor, Tensor]:
    """Min-norm weights of the hull of ``g_t + u g0`` and ``‖g_w‖`` of the unshifted combination."""
    shifted = gram + u * (a[:, None] + a[None, :]) + (u * u) * g0_sq
    w = min_norm_weights(shifted)
    return w, (w @ gram @ w).clamp(min=0.0).sqrt()


def cagrad_weights(gram: Tensor, c: float, rescale: int = 1) -> Tensor:
    """CAGrad weights ``w`` with ``w @ J = d / rescale_factor``.

    Args:
        gram: float64 Gram matrix ``(T, T)``.
        c: radius scale of the ball around the mean gradient (``c ≥ 0``; the paper uses 0.4–0.5).
        rescale: 0, 1 or 2 — divide ``d`` by 1, ``1 + c²`` or ``1 + c``.
    """
    num_tasks = gram.shape[0]
    mean = torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype)
    a = gram @ mean  # a_t = g_t · g0
    g0_sq = (mean @ a).clamp(min=0.0)
    radius = c * float(g0_sq.sqrt())
    factor = (1.0, 1.0 + c * c, 1.0 + c)[rescale]
    if radius <= 0.0:
        return mean / factor

    def gap(u: float) -> tuple[float, Tensor, float]:
        w, norm = _shifted_min_norm(gram, a, g0_sq, u)
        return float(norm) - radius * u, w, float(norm)

    largest = float(gram.diagonal().max().sqrt())
    hi = largest / radius  # ‖g_w‖ ≤ max ‖g_t‖, so gap(hi) ≤ 0
    f_hi, w, norm = gap(hi)
    if f_hi >= 0.0:
        return (mean + (radius / norm) * w) / factor if norm > 0 else mean / factor
    lo = hi
    while True:
        lo /= 2.0
        if radius * lo < _ZERO_NORM * largest:
            # No root with a resolvable ‖g_w*‖: g_w* = 0 (see the module docstring).
            return mean / factor
        f_lo, w, norm = gap(lo)
        if f_lo > 0.0:
            break
        hi, f_hi = lo, f_lo
    # Illinois false position on [lo, hi] (gap > 0 at lo, < 0 at hi): superlinear, never
    # leaves the bracket.
    side = 0
    for _ in range(200):
        u = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        f_u, w, norm = gap(u)
        if abs(f_u) <= _ROOT_RTOL * largest or hi - lo <= _ROOT_RTOL * hi:
            break
        if f_u > 0:
            lo, f_lo = u, f_u
            if side == 1:
                f_hi /= 2
            side = 1
        else:
            hi, f_hi = u, f_u
            if side == -1:
                f_lo /= 2
            side = -1
    if norm < _ZERO_NORM * largest:
        return mean / factor
    return (mean + (radius / norm) * w) / factor


class CAGrad(GramMethod):
    """CAGrad (Liu et al. 2021).

    Args:
        c: radius scale ``c ≥ 0`` (0 gives the mean gradient).
        rescale: 0, 1 (default, as the paper's code) or 2 — divide the update by 1, ``1 + c²``
            or ``1 + c``.

    Equivariant under relabelling of the tasks; the weights are invariant to a common positive
    scale of the gradients (the update scales with them).
    """

    name = "cagrad"

    def __init__(self, c: float = 0.4, rescale: int = 1) -> None:
        super().__init__()
        if not c >= 0:
            raise ValueError(f"c: must be non-negative, got {c!r}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale: must be 0, 1 or 2, got {rescale!r}")
        self.c = float(c)
        self.rescale = int(rescale)

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return cagrad_weights(gram, self.c, self.rescale)

    def extra_repr(self) -> str:
        return f"c={self.c}, rescale={self.rescale}"
