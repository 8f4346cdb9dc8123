"""Oracle of ``cagrad``: the paper's dual solved by SLSQP on the explicit vectors."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from ._util import as_f64
from .mgda import mgda
from .upgrad import project_dual_cone_enum


def cagrad_direction(J: Tensor, c: float = 0.4) -> tuple[Tensor, Tensor, float]:
    """Solve the CAGrad dual with SLSQP, as the paper's released code does.

    Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning" (NeurIPS 2021,
    arXiv:2110.14048), eq. (5)-(6): with g0 = mean_i g_i and c' = c‖g0‖,

        w* = argmin_{w ∈ simplex}  g_w · g0 + c' ‖g_w‖,     g_w = Σ_i w_i g_i.

    The objective and its gradient (J g0 + c' J g_w / ‖g_w‖) are evaluated on the explicit
    vectors. SLSQP is run from the uniform point and from every vertex; the best run is kept.

    Returns ``(w*, g_w*, objective value)``.
    """
    J = as_f64(J)
    T = J.shape[0]
    Jn = J.numpy()
    g0 = Jn.mean(axis=0)
    cprime = c * float(np.linalg.norm(g0))
    Jg0 = Jn @ g0

    def fun(w: np.ndarray) -> float:
        gw = w @ Jn
        return float(gw @ g0 + cprime * np.linalg.norm(gw))

    def jac(w: np.ndarray) -> np.ndarray:
        gw = w @ Jn
        n = np.linalg.norm(gw)
        if n == 0.0:
            return Jg0.copy()
        return Jg0 + cprime * (Jn @ gw) / n

    starts = [np.full(T, 1.0 / T)] + [np.eye(T)[k] for k in range(T)]
    best = None
    for x0 in starts:
        res = minimize(
            fun,
            x0,
            jac=jac,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * T,
            constraints=[
                {"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones_like(w)}
            ],
            options={"ftol": 1e-15, "maxiter": 2000},
        )
        w = np.clip(res.x, 0.0, None)
        w = w / w.sum()
        val = fun(w)
        if best is None or val < best[1]:
            best = (w, val)
    w, val = best
    return torch.from_numpy(w), torch.from_numpy(w @ Jn), val


def cagrad(J: Tensor, c: float = 0.4, rescale: int = 1, zero_tol: float = 1e-9) -> Tensor:
    """CAGrad update (Liu et al. 2021, NeurIPS, Algorithm 1):

        d = g0 + (c' / ‖g_w*‖) g_w*,

    then rescale=0: d,  rescale=1: d/(1+c²),  rescale=2: d/(1+c).

    Degenerate case: when the dual optimum is at g_w* = 0 (0 in the hull and nothing beats the
    objective value 0 there) the direction g_w*/‖g_w*‖ is undefined. The max-min value of the
    primal (eq. 4) is then the dual value 0, so its maximisers are the d in the ball with
    J d ≥ 0; the one closest to g0 is the projection of g0 onto the dual cone {x : J x ≥ 0}
    (computed by active-set enumeration, :func:`textbook.upgrad.project_dual_cone_enum`), which
    is g0 itself when g0 conflicts with no task. Because SLSQP only approaches a kink at 0
    loosely, "at 0" is decided on the OBJECTIVE: the origin is in the hull (exact MGDA min-norm
    ≈ 0) and the best objective found is ≥ −zero_tol·scale² (scale = largest gradient norm);
    otherwise the direction of SLSQP's g_w* is used.
    """
    J = as_f64(J)
    g0 = J.mean(dim=0)
    cprime = c * float(torch.linalg.vector_norm(g0))
    scale = float(torch.linalg.vector_norm(J, dim=1).max()) if J.numel() else 0.0
    _, gw, val = cagrad_direction(J, c)
    gw_norm = float(torch.linalg.vector_norm(gw))
    zero_in_hull = float(torch.linalg.vector_norm(mgda(J))) <= 1e-9 * max(scale, 1e-300)
    degenerate = scale == 0.0 or gw_norm == 0.0 or (zero_in_hull and val >= -zero_tol * scale**2)
    if degenerate:
        d = torch.from_numpy(project_dual_cone_enum(J.numpy(), g0.numpy()))
    else:
        d = g0 + (cprime / gw_norm) * gw
    if rescale == 0:
        return d
    if rescale == 1:
        return d / (1 + c**2)
    if rescale == 2:
        return d / (1 + c)
    raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")
