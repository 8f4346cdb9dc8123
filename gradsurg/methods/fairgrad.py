"""``fairgrad``: FairGrad (Ban & Ji 2024, "Fair Resource Allocation in Multi-Task Learning",
ICML, arXiv:2402.15638).

FairGrad picks the update d = Σ_t w_t g_t whose per-task improvements u_t = g_tᵀ d maximise the
α-fair utility Σ_t u_t^{1−α}/(1−α) (log u_t for α = 1) in a ball around 0. Its optimality
conditions (the paper's Eq. for w) are the T nonlinear equations

    G w = w^{−1/α}   (element-wise power),   w > 0,

i.e. g_tᵀ d = w_t^{−1/α} for every task. They are the stationarity conditions of the strictly
convex function

    φ(w) = ½ wᵀ G w − Σ_t h(w_t),   h(w) = w^{1−1/α}/(1−1/α)  (α ≠ 1),  h(w) = log w  (α = 1),

whose Hessian G + (1/α) diag(w^{−1/α−1}) is positive definite. gradsurg minimises φ with a
damped Newton method that keeps w > 0 (fraction-to-boundary step, Armijo backtracking), to a
residual ‖G w − w^{−1/α}‖ of ~1e−13 relative; the paper's code uses ``scipy.optimize.
least_squares``, which stops far earlier. Scaling: if G is multiplied by c the solution is
multiplied by c^{−α/(1+α)}, so the solve runs on G / max_t G_tt and is scaled back.

Degenerate inputs (documented deviations, none of which the paper covers):

* a task with a zero gradient has a row (G w)_t = 0 that can never equal w_t^{−1/α} > 0; it is
  left out of the system and gets weight 0 (its gradient contributes nothing anyway);
* if 0 is a non-negative, non-trivial combination of the gradients (e.g. g_2 = −g_1), φ is
  unbounded below and there is no solution (w → ∞ along the null combination). gradsurg detects
  it with the exact min-norm point of the hull (Wolfe's algorithm, as MGDA): if that point is 0
  to rounding (squared norm ≤ 1e−13 of the largest squared gradient norm) the parameters are
  Pareto-stationary and all weights are 0. Nearly stationary problems are ill-conditioned; the
  Newton iterations are capped and the last finite iterate is returned. Every gradient being
  zero gives all-zero weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import _compiled
from ._minnorm import min_norm_weights_np
from .base import GramMethod

__all__ = ["FairGrad", "fairgrad_weights"]

_RES_TOL = 1e-13
_EPS = float(np.finfo(np.float64).eps)
_MAX_ITER = 200
# Squared min-norm of the hull (relative to the largest squared gradient norm) at or below which
# 0 counts as in the hull: a few hundred ulps, the precision of Wolfe's solve.
_STATIONARY = 1e-13


def _h(w: np.ndarray, alpha: float) -> np.ndarray:
    if alpha == 1.0:
        return np.log(w)
    q = 1.0 - 1.0 / alpha
    return w**q / q


def _phi(gram: np.ndarray, w: np.ndarray, alpha: float) -> float:
    return 0.5 * float(w @ gram @ w) - float(_h(w, alpha).sum())


def _solve(gram: np.ndarray, alpha: float) -> np.ndarray:
    """Newton on φ for a Gram matrix with positive diagonal and unit largest diagonal.

    Runs in C++ (csrc/cpu/fairgrad.cpp, the same steps) when the extension is built, else in
    numpy (see :mod:`._compiled`): a few dozen dependent steps on T-sized arrays, where per-call
    overhead dominated (torch: 10 ms at T = 4; numpy: ~1 ms).
    """
    compiled = _compiled.solver("fairgrad_solve")
    if compiled is not None:
        out = compiled(torch.from_numpy(gram), alpha)
        if out.numel():  # empty: a Hessian singular to working precision, solved below
            return out.numpy()
    n = gram.shape[0]
    w = np.ones(n)
    power = -1.0 / alpha
    for _ in range(_MAX_ITER):
        gw = gram @ w
        wp = w**power
        res = gw - wp
        size = float(np.abs(res).max())
        # Residual relative to the size of the two sides of the equation.
        if size <= _RES_TOL * float(np.maximum(np.abs(gw), wp).max()):
            break
        hess = gram + np.diag(wp / (alpha * w))  # w^(−1/α−1)/α
        try:
            step = np.linalg.solve(hess, -res)
        except np.linalg.LinAlgError:
            break
        if not bool(np.isfinite(step).all()):
            break
        neg = step < 0
        t = 1.0
        if bool(neg.any()):
            t = min(1.0, 0.99 * float((-w[neg] / step[neg]).min()))
        h0 = _h(w, alpha)
        f0 = 0.5 * float(w @ gw) - float(h0.sum())
        slope = float(res @ step)  # directional derivative (< 0: Hessian is PD)
        # Near the solution the decrease of φ falls below the rounding of φ itself and the
        # Armijo test fails on noise (T = 3, α = 3 stalled at a residual of 2e-12); there a step
        # that lowers φ by no more than its rounding level is taken if it lowers the residual.
        noise = -1.0
        while t > 1e-20:
            cand = w + t * step
            if bool((cand > 0).all()):
                f = _phi(gram, cand, alpha)
                if f <= f0 + 1e-4 * t * slope:
                    break
                if noise < 0:
                    noise = 8 * _EPS * (abs(f0) + 0.5 * abs(float(w @ gw)) + float(np.abs(h0).sum()))
                if abs(f - f0) <= noise and float(np.abs(gram @ cand - cand**power).max()) < size:
                    break
            t *= 0.5
        new = w + t * step
        if not bool((new > 0).all()) or np.array_equal(new, w):
            break
        w = new
    return w


def fairgrad_weights(gram: Tensor, alpha: float = 1.0) -> Tensor:
    """FairGrad weights: the positive solution of ``G w = w^(−1/α)`` (zero-gradient tasks: 0)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    num_tasks = g.shape[0]
    diag = np.diagonal(g)
    scale = float(diag.max())
    w = np.zeros(num_tasks)
    if not scale > 0:
        return torch.from_numpy(w)
    # Gradients whose squared norm is at rounding level of the largest one count as zero.
    idx = np.flatnonzero(diag > 1e-24 * scale)
    sub = g[np.ix_(idx, idx)] / scale
    # 0 in the convex hull of the (non-zero) gradients: Pareto-stationary, no solution exists
    # (φ is unbounded below along the hull weights); the update is 0, as MGDA's would be.
    hull = min_norm_weights_np(sub)
    if float(hull @ sub @ hull) <= _STATIONARY:
        return torch.from_numpy(w)
    w[idx] = _solve(sub, alpha) * scale ** (-alpha / (1.0 + alpha))
    return torch.from_numpy(w)


class FairGrad(GramMethod):
    """FairGrad (Ban & Ji 2024): weights solving ``G w = w^(−1/α)``; update ``Σ_t w_t g_t``.

    Args:
        alpha: fairness parameter α > 0 (α = 1: proportional fairness, α → ∞: max-min fairness;
            the paper uses 1 or 2).

    Equivariant under relabelling of the tasks; a common scale c of the gradients multiplies the
    weights by c^(−2α/(1+α)) and the update by c^((1−α)/(1+α)).
    """

    name = "fairgrad"
    # scale_invariant at the default α = 1 (degree (1 − α)/(1 + α) in general)
    permutation_invariant = scale_invariant = non_conflicting = True

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(alpha, (int, float)) and alpha > 0 and alpha < float("inf")):
            raise ValueError(f"alpha: must be a positive finite number, got {alpha!r}")
        self.alpha = float(alpha)

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return fairgrad_weights(gram, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
