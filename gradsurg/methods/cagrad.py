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
solve on a shifted Gram matrix (:mod:`._minnorm`) — for the u solving ‖g_w(u)‖ = c' u, a
one-dimensional root: every root satisfies the KKT conditions of the convex problem, hence is
optimal. The root is bracketed by u_lo = ‖x_MGDA‖/c' (x_MGDA the min-norm point of the hull
itself, so ‖g_w(u)‖ ≥ ‖x_MGDA‖ and the gap ‖g_w(u)‖ − c'u is ≥ 0 there) and u_hi = max‖g_t‖/c'
(gap ≤ 0), and found by Illinois false position on log u, so that brackets spanning many orders
of magnitude (gradient norms differing by 1e30, where ‖g_w*‖ is of the size of the smallest
gradient) cost a few dozen solves; all tolerances are relative.

When 0 is in the hull (x_MGDA = 0 up to the rounding of the combination that gives it):

* c ≥ 1: the dual objective is ≥ (c − 1)‖g0‖‖g_w‖ ≥ 0 = its value at g_w = 0, so g_w* = 0;
* c < 1: ‖g_w(u)‖/u is non-increasing (Zarantonello 1971, for projections onto a convex set
  containing the origin), so the positive root, if any, is found by decreasing u geometrically
  until the gap turns positive; if it stays ≤ 0 down to the resolution of the solves
  (c'u ≤ 1e-4 × Σ_t w_t‖g_t‖, see below), g_w* = 0.

g_w* = 0 (the paper's formula is then 0/0). The max-min value max_{‖d−g0‖ ≤ c'} min_i ⟨g_i, d⟩
equals the dual value 0, so the maximisers are the d in the ball with J d ≥ 0. The previous
version returned d = g0, which is not one of them when some task conflicts with g0 (TorchJD's
non-conflict property failed for c ∈ {1, 2} on T = 20 random matrices). gradsurg returns the
maximiser closest to g0: the projection π_C(g0) of g0 onto the dual cone C = {x : J x ≥ 0}
(the DualProj direction, solved exactly by :mod:`._qp`). It lies in the ball because the ball
meets C (for c ≥ 1 since 0 ∈ C: ‖π_C(g0) − g0‖ ≤ ‖0 − g0‖ ≤ c‖g0‖), conflicts with no task,
and is g0 itself whenever g0 conflicts with none. If rounding puts it outside the ball for
c < 1 (a value "0" that is really slightly negative), the paper's formula with the last g_w
found is used instead. Likewise, a dual solution that conflicts with some task (cosine below
−1e-10) while π_C(g0) (value ≥ 0) is in the ball — impossible in exact arithmetic — is replaced
by π_C(g0), the better of the two.

Resolution. "x_MGDA = 0" and "g_w* = 0" are decided as ‖g_w‖ ≤ 1e-4 × Σ_t w_t‖g_t‖: scale-free
(the previous threshold, 1e-5 × max_t‖g_t‖ like TorchJD's absolute ``norm_eps``, swallowed every
g_w* of gradients 1e5 times smaller than the largest) and relative to the combination that
forms g_w. Below it: (wᵀGw)^{1/2} from a float64 G is resolved only to ~1e-8 of that scale, and
the weights of d = g0 + c'g_w/‖g_w‖ grow like 1/ρ (ρ = ‖g_w‖/Σ_t w_t‖g_t‖), so a float32
combination w @ J would carry errors ~6e-8/ρ (a float32 T = 20, P = 100 rank-19 matrix that is
weakly stationary up to rounding has ρ ≈ 3.5e-6: its update conflicted by 7e-4 with c = 1).
Treating g_w* as 0 there costs at most (1 + c)‖g0‖‖g_w*‖ ≤ 1e-4 (1 + c)‖g0‖ Σ_t w_t‖g_t‖ of the
max-min value.

Options: ``c`` must be a finite number ≥ 0 (``c = inf`` used to hang the bracketing loop) and
``rescale`` one of 0, 1, 2; ``cagrad_weights`` checks them too.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ._minnorm import min_norm_weights_np
from ._qp import dual_cone_weights
from .base import GramMethod

__all__ = ["CAGrad", "cagrad_weights"]

_ROOT_RTOL = 1e-14
# ‖g_w‖ / Σ_t w_t‖g_t‖ at or below which g_w counts as 0 (see the module docstring).
_ZERO_NORM = 1e-4
# Cosine of d with a task below which the dual solution counts as conflicting.
_CONFLICT_TOL = 1e-10
_MAX_SOLVES = 200


def check_options(c: float, rescale: int) -> None:
    """Raise ``ValueError`` naming the option unless ``c`` is a finite number ≥ 0 and
    ``rescale`` is 0, 1 or 2."""
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (0.0 <= c < math.inf):
        raise ValueError(f"c: must be non-negative and finite, got {c!r}")
    if isinstance(rescale, bool) or rescale not in (0, 1, 2):
        raise ValueError(f"rescale: must be 0, 1 or 2, got {rescale!r}")


def _shifted_min_norm(
    gram: np.ndarray, a2: np.ndarray, g0_sq: float, u: float, roots: np.ndarray, start: Tensor | None = None
) -> tuple[Tensor, float, float]:
    """Min-norm weights of the hull of ``g_t + u g0``, ``‖g_w‖`` of the unshifted combination
    and the rounding scale Σ_t w_t‖g_t‖ of that combination.

    ``gram`` is G in numpy, ``a2`` = a 1ᵀ + 1 aᵀ (a = G 1/T) and ``roots`` = ‖g_t‖, all formed
    once per CAGrad call. ``start``: the weights of the previous solve of the root finding, whose
    support is tried first (a warm start: successive shifts nearly always share the corral, so
    a solve is one affine solve instead of a dozen; the answer is the same min-norm point, see
    :func:`~gradsurg.methods._minnorm.min_norm_weights_np`).
    """
    shifted = gram + u * a2 + (u * u) * g0_sq
    w = min_norm_weights_np(shifted, None, None if start is None else start.numpy())
    norm = max(float(w @ gram @ w), 0.0) ** 0.5
    return torch.from_numpy(w), norm, float(w @ roots)


def cagrad_weights(gram: Tensor, c: float, rescale: int = 1) -> Tensor:
    """CAGrad weights ``w`` with ``w @ J = d / rescale_factor``.

    Args:
        gram: float64 Gram matrix ``(T, T)``.
        c: radius scale of the ball around the mean gradient (finite, ``c ≥ 0``; the paper uses
            0.4–0.5).
        rescale: 0, 1 or 2 — divide ``d`` by 1, ``1 + c²`` or ``1 + c``.

    Raises:
        ValueError: an invalid ``c`` or ``rescale`` (the message names it).
    """
    check_options(c, rescale)
    num_tasks = gram.shape[0]
    c = float(c)
    mean = torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype)
    factor = (1.0, 1.0 + c * c, 1.0 + c)[rescale]
    top = float(gram.diagonal().max())
    if not top > 0:
        return mean / factor
    g = gram / top  # the weights do not depend on a common scale; this keeps every step in range
    a = g @ mean  # a_t = g_t · g0
    g0_sq = float((mean @ a).clamp(min=0.0))
    radius = c * g0_sq**0.5
    if not radius > 0.0 or not 1.0 / radius < math.inf:
        return mean / factor

    def formula(w: Tensor, norm: float) -> Tensor:
        # d = g0 + (c'/‖g_w‖) g_w, divided by the rescale factor (in this order, so that a huge c
        # gives c/(1 + c²)-sized coefficients rather than inf/inf)
        return mean / factor + ((c / factor) * (g0_sq**0.5 / norm)) * w

    def at_zero(w_last: Tensor | None, norm_last: float) -> Tensor:
        # g_w* = 0: the maximiser closest to g0, π_C(g0) (see the module docstring).
        v = dual_cone_weights(g, mean)
        dist = float(((v - mean) @ g @ (v - mean)).clamp(min=0.0).sqrt())
        if c >= 1.0 or w_last is None or dist <= radius * (1.0 + 1e-9):
            return v / factor
        return formula(w_last, norm_last)

    warm: list[Tensor] = []  # the last shifted solve's weights: the next one starts there
    g_np = g.numpy()
    a_np = a.numpy()
    a2 = a_np[:, None] + a_np[None, :]
    roots = np.sqrt(np.maximum(np.diagonal(g_np), 0.0))

    def solve(u: float) -> tuple[Tensor, float, float]:
        w, n, scale = _shifted_min_norm(g_np, a2, g0_sq, u, roots, warm[0] if warm else None)
        warm[:] = [w]
        return w, n, scale

    x_np = min_norm_weights_np(g_np)
    x_w = torch.from_numpy(x_np)
    warm.append(x_w)
    x_norm = max(float(x_np @ g_np @ x_np), 0.0) ** 0.5
    x_scale = float(x_np @ roots)
    hi = 1.0 / radius  # ‖g_w‖ ≤ max‖g_t‖ = 1, so the gap is ≤ 0 there
    if x_norm > _ZERO_NORM * x_scale:
        lo = x_norm / radius  # the gap is ≥ 0 there (see the module docstring)
        w_lo, n_lo, _ = solve(lo)
        if not lo < hi:
            return formula(w_lo, n_lo)
    elif c >= 1.0:
        return at_zero(None, 0.0)
    else:
        # 0 in the hull, c < 1: look for a positive gap below hi, geometrically.
        lo, w_lo, n_lo = hi, None, 0.0
        while True:
            lo /= 256.0
            w, n, scale = solve(lo)
            if n > radius * lo:
                w_lo, n_lo = w, n
                break
            if radius * lo <= _ZERO_NORM * scale or not lo > 0:
                return at_zero(w if n > _ZERO_NORM * scale else None, n)
            hi = lo
    # Illinois false position on s = log u, h(s) = log‖g_w(u)‖ − log(c'u): h(lo) ≥ 0 ≥ h(hi).
    def h(u: float) -> tuple[float, Tensor, float, float]:
        w, n, scale = solve(u)
        val = math.log(n) - math.log(radius * u) if n > 0 else -math.inf
        return val, w, n, scale

    s_lo, s_hi = math.log(lo), math.log(hi)
    f_lo = math.log(n_lo) - math.log(radius * lo) if n_lo > 0 else math.inf
    assert w_lo is not None
    w, norm, scale = w_lo, n_lo, 0.0
    if f_lo > 0.0:
        f_hi, w_hi, n_hi, scale = h(hi)
        w, norm = w_hi, n_hi
        side = 0
        for _ in range(_MAX_SOLVES):
            if f_hi >= 0.0:
                break
            if math.isinf(f_hi) or math.isinf(f_lo):
                s_new = (s_lo + s_hi) / 2
            else:
                s_new = (s_lo * f_hi - s_hi * f_lo) / (f_hi - f_lo)
            f_new, w, norm, scale = h(math.exp(s_new))
            if abs(f_new) <= _ROOT_RTOL or s_hi - s_lo <= _ROOT_RTOL:
                break
            if f_new > 0:
                s_lo, f_lo = s_new, f_new
                if side == 1:
                    f_hi /= 2
                side = 1
            else:
                s_hi, f_hi = s_new, f_new
                if side == -1:
                    f_lo /= 2
                side = -1
    else:
        scale = float(w.numpy() @ roots)
    if not norm > _ZERO_NORM * scale:
        return at_zero(None, 0.0)
    d = formula(w, norm)
    d_np = d.numpy()
    gd = g_np @ d_np
    d_norm = max(float(d_np @ gd), 0.0) ** 0.5
    live = roots > 0
    if float((gd[live] / roots[live]).min()) < -_CONFLICT_TOL * d_norm:
        # A negative max-min value where π_C(g0) (value ≥ 0) is feasible can only be rounding in
        # a g_w* resolved from G to a few digits (see the module docstring): keep the better.
        v = dual_cone_weights(g, mean)
        if float(((v - mean) @ g @ (v - mean)).clamp(min=0.0).sqrt()) <= radius * (1.0 + 1e-9):
            return v / factor
    return d


class CAGrad(GramMethod):
    """CAGrad (Liu et al. 2021).

    Args:
        c: radius scale, a finite ``c ≥ 0`` (0 gives the mean gradient).
        rescale: 0, 1 (default, as the paper's code) or 2 — divide the update by 1, ``1 + c²``
            or ``1 + c``.

    Equivariant under relabelling of the tasks; the weights are invariant to a common positive
    scale of the gradients (the update scales with them).
    """

    name = "cagrad"
    permutation_invariant = positively_homogeneous = True

    def __init__(self, c: float = 0.4, rescale: int = 1) -> None:
        super().__init__()
        check_options(c, rescale)
        self.c = float(c)
        self.rescale = int(rescale)

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return cagrad_weights(gram, self.c, self.rescale)

    def extra_repr(self) -> str:
        return f"c={self.c}, rescale={self.rescale}"
