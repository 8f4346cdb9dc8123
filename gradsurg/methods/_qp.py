"""An exact small quadratic-program solver for the dual-cone projections of UPGrad and DualProj.

Quinton & Rey 2024 ("Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232,
Proposition 1) show that the projection of Jᵀu onto the dual cone {x : J x ≥ 0} of the rows of J
is Jᵀv*, with v* a solution of

    min_v  ½ vᵀ G v   subject to  v ≥ u,          G = J Jᵀ.

With v = u + z this is the non-negative quadratic program

    min_{z ≥ 0}  ½ zᵀ G z + (G u)ᵀ z,

which is the non-negative least-squares problem min_{z ≥ 0} ‖R z + R u‖² for any factor
G = RᵀR. gradsurg solves it with the Lawson–Hanson active-set algorithm (C. L. Lawson &
R. J. Hanson 1974, "Solving Least Squares Problems", ch. 23, Algorithm NNLS), which terminates
after finitely many steps at an exact minimiser, on such a factor:

* Jacobi scaling: the variables are y_j = z_j √G_jj, i.e. the factor is that of the cosine matrix
  C = D⁻¹ G D⁻¹ (D = diag √G_jj, unit diagonal), so every optimality test is relative to each
  task's own norm (norms may differ by 1e30 and more); a zero gradient keeps z_j = 0 (it changes
  neither the objective nor the result);
* the factor R = Λ^{1/2} Vᵀ comes from the eigendecomposition C = V Λ Vᵀ, with the eigenvalues at
  rounding level (≤ 10·T·eps·λ_max, where the eigenvalues of a computed G are noise) set to 0:
  a rank-deficient G (T > P, duplicated or dependent gradients) is then exactly rank-deficient
  for the solver, in a way that depends only on the spectrum — hence the same for any labelling
  of the tasks;
* the passive-set least-squares problems min ‖R_P y_P − b‖ are solved on R_P itself (corrected
  semi-normal equations, or SVD least squares when R_P is nearly rank-deficient), not on the
  normal equations G_PP z_P = −(G u)_P.

For the projections of UPGrad and DualProj (:func:`dual_cone_weights`) two more steps:

* Strong stationarity at the rounding boundary. The projection is 0 for every task exactly when
  some w > 0 has wᵀJ = 0 (J strongly stationary), and a J that is only weakly stationary (w ≥ 0
  with zeros) sits on the boundary of that set, where the exact projection jumps. On gradient
  matrices that are weakly stationary up to rounding (TorchJD's float32 property matrices, e.g.
  T = 20, P = 10), the exact solver fell on the strongly stationary side by margins ~1e-9 and
  returned ~1e-10 where TorchJD's property requires an update (its solver regularises G by
  1e-4). The non-negative least squares are therefore solved with a ridge 1e-11·‖y‖² (in the
  Jacobi-scaled variables, i.e. relative to unit task gradients): representations of −g_i that
  need weights beyond ~1/√1e-11 ≈ 3e5 — strong stationarity by a margin below ~3e-6 — are not
  taken, which puts such J on the weakly stationary side, whose projections are the limit from
  the non-stationary side. The ridge solution then only fixes the active set: the projection is
  recomputed by unregularised least squares on it (singular values below 1e-5 relative treated
  as 0), so well-posed problems get their exact answer, not a regularised one.
* Weights. The projection R(Du + y*) is unique but y* is not when G is singular; the weights are
  the minimum-norm representation D⁻¹ V_k V_kᵀ (Du + y*) of the projection (equal to u + z* when
  G is non-singular): O(1), and independent of the labelling of the tasks, so that a float32
  combination w @ J rounds the same way for every labelling (nearly dependent active sets gave
  weights ~1e6, which float32 rounded into conflicts).

Why (regression, found on TorchJD's property matrices): the previous version ran Lawson–Hanson on
G itself, solving G_PP z_P = −(G u)_P by least squares with a relative cut-off of 1e-13. On a
near-singular G_PP (a T = 20, P = 100 rank-19 gradient matrix in float32, whose G has an
eigenvalue 3e-16·λ_max) the cut-off discarded an eigenvalue σ² whose right-hand-side component
is of order σ, i.e. a contribution of order 1/σ·σ = 1 to the projection: the result violated
complementary slackness by 3e-5 and moved by 1e-3 when the tasks were relabelled. On the factor
the same direction has singular value σ ≈ 3e-8, far above the solver's cut-off, and the
projection R_P y_P is computed stably.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dual_cone_weights", "dual_cone_weights_many", "nonneg_qp"]

_EPS = float(torch.finfo(torch.float64).eps)
# Optimality: a coordinate may enter the passive set only if its gradient component exceeds this
# relative to ‖b‖ (unit-norm columns): a few hundred ulps.
_KKT_TOL = 1e-13
# Eigenvalues of the Jacobi-scaled G at or below this many T·eps·λ_max are rounding noise.
_RANK_RTOL = 10.0
# Smallest Cholesky pivot² of R_Pᵀ R_P (unit diagonal) for the semi-normal equations; below it
# the passive problem is solved by SVD least squares on R_P.
_CHOL_MIN = 1e-10
# Ridge on the (Jacobi-scaled) weights of the dual-cone projections, and the relative singular
# value cut-off of the unregularised re-solve on the ridge solution's active set (see above).
_RIDGE = 1e-11
_POLISH_RCOND = 1e-5


def _passive_solve(r: Tensor, b: Tensor, passive: list[int]) -> Tensor:
    """``argmin ‖R_P y − b‖`` (minimum-norm when R_P is rank-deficient), as a full-length vector."""
    idx = torch.tensor(passive)
    a = r[:, idx]
    normal = a.T @ a
    chol, info = torch.linalg.cholesky_ex(normal)
    if int(info) == 0 and float(chol.diagonal().min()) ** 2 > _CHOL_MIN:
        # Corrected semi-normal equations (Björck 1987): one refinement step with the residual
        # formed from R_P gives the accuracy of a QR solve.
        sol = torch.cholesky_solve((a.T @ b).unsqueeze(1), chol)[:, 0]
        sol = sol + torch.cholesky_solve((a.T @ (b - a @ sol)).unsqueeze(1), chol)[:, 0]
    else:
        sol = torch.linalg.lstsq(a, b.unsqueeze(1), driver="gelsd").solution[:, 0]
    out = torch.zeros(r.shape[1], dtype=r.dtype)
    out[idx] = sol
    return out


def _lawson_hanson(r: Tensor, b: Tensor, max_iter: int) -> Tensor:
    """``argmin_{y ≥ 0} ‖R y − b‖`` (Lawson & Hanson 1974, Algorithm 23.10)."""
    num = r.shape[1]
    y = torch.zeros(num, dtype=r.dtype)
    tol = _KKT_TOL * float(b.norm())
    passive: list[int] = []
    blocked: set[int] = set()  # coordinates whose entry was undone by rounding this round
    for _ in range(max_iter):
        grad = r.T @ (b - r @ y)  # minus the gradient of ½‖R y − b‖²: positive = may decrease it
        candidates = [j for j in range(num) if j not in passive and j not in blocked]
        if not candidates:
            break
        j = max(candidates, key=lambda k: float(grad[k]))
        if not float(grad[j]) > tol:
            break
        passive.append(j)
        while True:
            s = _passive_solve(r, b, passive)
            idx = torch.tensor(passive)
            if bool((s[idx] > 0).all()):
                y = s
                break
            # Walk from y towards s until the first passive coordinate hits zero; drop those.
            yp, sp = y[idx], s[idx]
            neg = sp <= 0
            ratio = torch.where(neg, yp / torch.where(neg, yp - sp, 1.0), torch.inf)
            alpha = float(ratio.min().clamp(0.0, 1.0))
            y = y + alpha * (s - y)
            first = passive[int(torch.argmin(ratio))]
            keep = [k for k in passive if float(y[k]) > 0 and k != first and not (k == j and alpha == 0.0)]
            for k in passive:
                if k not in keep:
                    y[k] = 0.0
            if j not in keep and alpha == 0.0:
                blocked.add(j)  # entering j cannot make progress: rounding, skip it once
            passive = keep
            if not passive:
                break
        if passive and j in passive:
            blocked.clear()
    return y.clamp(min=0.0)


class _Factored:
    """Jacobi scaling and truncated factor of a Gram matrix, shared by several right-hand sides."""

    def __init__(self, gram: Tensor) -> None:
        diag = gram.diagonal()
        self.num = gram.shape[0]
        self.live = torch.nonzero(diag > 0).flatten()  # a zero row of G: its z_j changes nothing
        self.d = diag[self.live].sqrt()
        cos = gram[self.live][:, self.live] / self.d[:, None] / self.d[None, :]
        lam, vecs = torch.linalg.eigh((cos + cos.T) / 2)
        keep = lam > _RANK_RTOL * cos.shape[0] * _EPS * float(lam.max()) if lam.numel() else lam > 0
        self.basis = vecs[:, keep]  # V_k: orthonormal basis of the (numerical) range of C
        self.r = lam[keep].sqrt()[:, None] * self.basis.T  # R = Λ_k^{1/2} V_kᵀ, Rᵀ R ≈ C

    def nnls(self, b: Tensor, max_iter: int | None, ridge: float = 0.0) -> Tensor:
        """y ≥ 0 minimising ‖R y − b‖² + ridge·‖y‖² (on the live coordinates)."""
        if not float(b.abs().max()) > 0:
            return torch.zeros(self.live.numel(), dtype=b.dtype)
        r = self.r
        if ridge > 0:
            r = torch.cat([r, ridge**0.5 * torch.eye(r.shape[1], dtype=r.dtype)])
            b = torch.cat([b, torch.zeros(r.shape[1], dtype=b.dtype)])
        return _lawson_hanson(r, b, max_iter or 10 * self.live.numel() + 50)

    def projection_weights(self, u: Tensor) -> Tensor:
        """Weights ``w`` with ``Jᵀw`` the projection of ``Jᵀu`` onto the dual cone: active set from
        the ridge-regularised NNLS, projection re-solved without the ridge on it, minimum-norm
        weights (see the module docstring)."""
        w = u.clone()
        if self.live.numel() == 0:
            return w
        du = self.d * u[self.live]
        b = -(self.r @ du)
        y = self.nnls(b, None, _RIDGE)
        passive = torch.nonzero(y > 0).flatten()
        if passive.numel():
            # Polish: the unregularised least-squares solution on the same active set.
            a = self.r[:, passive]
            sol = torch.linalg.lstsq(a, b.unsqueeze(1), rcond=_POLISH_RCOND, driver="gelsd").solution[:, 0]
            if bool((sol > 0).all()):
                y = torch.zeros_like(y)
                y[passive] = sol
        w[self.live] = (self.basis @ (self.basis.T @ (du + y))) / self.d
        return w


def nonneg_qp(
    gram: Tensor, lin: Tensor | None = None, max_iter: int | None = None, *, u: Tensor | None = None
) -> Tensor:
    """A minimiser of ``½ zᵀ G z + linᵀ z`` over ``z ≥ 0`` (Lawson–Hanson on a factor of ``G``).

    Args:
        gram: float64 ``(T, T)`` positive semi-definite matrix.
        lin: float64 ``(T,)``; must lie in the range of ``gram`` (e.g. ``lin = G u``), so the
            problem is bounded below.
        max_iter: cap on outer iterations (default ``10 T + 50``); the algorithm terminates
            finitely, the cap only guards against rounding-induced cycling.
        u: instead of ``lin``, the ``u`` with ``lin = G u`` (more accurate: the least-squares
            right-hand side −R D u is then formed from the factor directly).

    Returns:
        ``z`` (float64, ``(T,)``, ``z ≥ 0``).
    """
    z = torch.zeros(gram.shape[0], dtype=gram.dtype)
    fac = _Factored(gram)
    if fac.live.numel() == 0:
        return z
    if u is not None:
        b = -(fac.r @ (fac.d * u[fac.live]))
    elif lin is not None:
        # Rᵀ b = −lin/d: the least-squares b is the component of lin in the range of G.
        b = torch.linalg.lstsq(fac.r.T, (-lin[fac.live] / fac.d).unsqueeze(1), driver="gelsd").solution[:, 0]
    else:
        raise ValueError("lin: give lin = G u, or u")
    z[fac.live] = fac.nnls(b, max_iter) / fac.d
    return z


def _regularised(gram: Tensor, reg_eps: float) -> Tensor:
    if reg_eps > 0:
        trace = float(gram.diagonal().sum())
        return (gram / trace if trace > 0 else torch.zeros_like(gram)) + reg_eps * torch.eye(
            gram.shape[0], dtype=gram.dtype
        )
    return gram


def dual_cone_weights(gram: Tensor, u: Tensor, reg_eps: float = 0.0) -> Tensor:
    """Weights ``w`` with ``Jᵀw`` the projection of ``Jᵀu`` onto the dual cone ``{x : J x ≥ 0}``.

    Args:
        gram: float64 ``(T, T)`` Gram matrix of the rows of ``J``.
        u: float64 ``(T,)``.
        reg_eps: ``0`` (default) solves the exact problem. A positive value reproduces TorchJD's
            ``QuadprogProjector``: ``G`` is first divided by its trace and ``reg_eps·I`` is added
            (a perturbation of the problem, which moves the result by about ``reg_eps``).

    Returns:
        ``w`` (float64, ``(T,)``): ``u + z*`` when G is non-singular; for a singular G the
        minimum-norm weights of the same projection (see :meth:`_Factored.projection_weights`).
    """
    return _Factored(_regularised(gram, reg_eps)).projection_weights(u)


def dual_cone_weights_many(gram: Tensor, us: Tensor, reg_eps: float = 0.0) -> Tensor:
    """:func:`dual_cone_weights` for the rows of ``us`` (``(m, T)``), factoring G once."""
    fac = _Factored(_regularised(gram, reg_eps))
    return torch.stack([fac.projection_weights(u) for u in us])
