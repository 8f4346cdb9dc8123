"""An exact small quadratic-program solver for the dual-cone projections of UPGrad and DualProj.

Quinton & Rey 2024 ("Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232,
Proposition 1) show that the projection of Jᵀu onto the dual cone {x : J x ≥ 0} of the rows of J
is Jᵀv*, with v* a solution of

    min_v  ½ vᵀ G v   subject to  v ≥ u,          G = J Jᵀ.

With v = u + z this is the non-negative quadratic program

    min_{z ≥ 0}  ½ zᵀ G z + (G u)ᵀ z,

which is a non-negative least-squares problem min_{z ≥ 0} ‖R z + R u‖² for any factor G = RᵀR.
The Lawson–Hanson active-set algorithm (C. L. Lawson & R. J. Hanson 1974, "Solving Least Squares
Problems", ch. 23) only ever touches RᵀR = G and Rᵀ(−R u) = −G u, so it runs on G directly and
terminates after finitely many steps at an exact minimiser (up to the precision of its small
linear solves). Singular G (duplicated or dependent gradients) needs no regularisation: the
passive-set systems G_PP z_P = −(G u)_P are always consistent (their right-hand side lies in the
range of G_PP), and they are solved by SVD-based least squares, which picks the minimum-norm
solution. The minimiser z may then not be unique, but Jᵀ(u + z), the projection, is. The
problem is solved after a Jacobi scaling (z_j √G_jj as variables, unit diagonal) so that the
optimality test is relative for every task even when gradient norms differ by many orders of
magnitude; tasks with a zero gradient keep z_j = 0 (they change neither objective nor result).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dual_cone_weights", "nonneg_qp"]

# Optimality: a coordinate outside the passive set may enter only if its gradient component
# exceeds this (relative to the unit-diagonal-scaled problem): a few hundred ulps.
_KKT_TOL = 1e-13
# Singular values of G_PP below this relative cutoff are treated as zero in the passive solves.
_RCOND = 1e-13


def _passive_solve(gram: Tensor, rhs: Tensor, passive: list[int]) -> Tensor:
    idx = torch.tensor(passive)
    sub = gram[idx][:, idx]
    rhs_p = rhs[idx].unsqueeze(1)
    sol = torch.linalg.lstsq(sub, rhs_p, rcond=_RCOND, driver="gelsd").solution[:, 0]
    out = torch.zeros_like(rhs)
    out[idx] = sol
    return out


def nonneg_qp(gram: Tensor, lin: Tensor, max_iter: int | None = None) -> Tensor:
    """A minimiser of ``½ zᵀ G z + linᵀ z`` over ``z ≥ 0`` (Lawson–Hanson, on ``G`` itself).

    Args:
        gram: float64 ``(T, T)`` positive semi-definite matrix.
        lin: float64 ``(T,)``; must lie in the range of ``gram`` (e.g. ``lin = G u``), so the
            problem is bounded below.
        max_iter: cap on outer iterations (default ``10 T + 50``); the algorithm terminates
            finitely, the cap only guards against rounding-induced cycling.

    Returns:
        ``z`` (float64, ``(T,)``, ``z ≥ 0``).
    """
    num = gram.shape[0]
    z = torch.zeros(num, dtype=gram.dtype)
    diag = gram.diagonal()
    live = torch.nonzero(diag > 0).flatten()  # a zero row of G: z_j does not change anything
    if live.numel() == 0:
        return z
    # Jacobi scaling y = D z, D = diag(√G_jj): unit diagonal, so the optimality test below is
    # relative for every coordinate (task gradients whose norms differ by 1e6 would otherwise put
    # the small ones' gradient components under any absolute tolerance). Positive scaling keeps
    # the constraint y ≥ 0.
    d = diag[live].sqrt()
    g = gram[live][:, live] / d[:, None] / d[None, :]
    c = -lin[live] / d  # the NNLS "Aᵀb"
    num_live = live.numel()
    c_scale = float(c.abs().max())
    if not c_scale > 0:
        return z
    y = _lawson_hanson(g, c, c_scale, max_iter or 10 * num_live + 50)
    z[live] = y / d
    return z


def _lawson_hanson(g: Tensor, c: Tensor, c_scale: float, max_iter: int) -> Tensor:
    num = g.shape[0]
    z = torch.zeros(num, dtype=g.dtype)
    passive: list[int] = []
    blocked: set[int] = set()  # coordinates whose entry was undone by rounding this round
    for _ in range(max_iter):
        grad = c - g @ z  # minus the gradient of the objective: positive = may decrease it
        candidates = [j for j in range(num) if j not in passive and j not in blocked]
        if not candidates:
            break
        j = max(candidates, key=lambda k: float(grad[k]))
        if float(grad[j]) <= _KKT_TOL * c_scale:
            break
        passive.append(j)
        while True:
            s = _passive_solve(g, c, passive)
            idx = torch.tensor(passive)
            if bool((s[idx] > 0).all()):
                z = s
                break
            # Walk from z towards s until the first passive coordinate hits zero; drop those.
            zp, sp = z[idx], s[idx]
            neg = sp <= 0
            ratio = torch.where(neg, zp / torch.where(neg, zp - sp, 1.0), torch.inf)
            alpha = float(ratio.min().clamp(0.0, 1.0))
            z = z + alpha * (s - z)
            keep = [k for k in passive if float(z[k]) > 0 and not (k == j and alpha == 0.0)]
            for k in passive:
                if k not in keep:
                    z[k] = 0.0
            if j not in keep and alpha == 0.0:
                blocked.add(j)  # entering j cannot make progress: rounding, skip it once
            passive = keep
            if not passive:
                break
        if passive and j in passive:
            blocked.clear()
    return z.clamp(min=0.0)


def dual_cone_weights(gram: Tensor, u: Tensor, reg_eps: float = 0.0) -> Tensor:
    """Weights ``w`` with ``Jᵀw`` the projection of ``Jᵀu`` onto the dual cone ``{x : J x ≥ 0}``.

    Args:
        gram: float64 ``(T, T)`` Gram matrix of the rows of ``J``.
        u: float64 ``(T,)``.
        reg_eps: ``0`` (default) solves the exact problem. A positive value reproduces TorchJD's
            ``QuadprogProjector``: ``G`` is first divided by its trace and ``reg_eps·I`` is added
            (a perturbation of the problem, which moves the result by about ``reg_eps``).

    Returns:
        ``w = u + z*`` (float64, ``(T,)``).
    """
    g = gram
    if reg_eps > 0:
        trace = float(gram.diagonal().sum())
        g = (gram / trace if trace > 0 else torch.zeros_like(gram)) + reg_eps * torch.eye(
            gram.shape[0], dtype=gram.dtype
        )
    return u + nonneg_qp(g, g @ u)
