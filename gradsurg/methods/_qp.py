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
  rounding level (≤ 10·T·eps·λ_max, where the eigenvalues of a computed G are noise; at least
  T·eps32·λ_max when G's entries are float32 numbers, see :mod:`._precision`) set to 0:
  a rank-deficient G (T > P, duplicated or dependent gradients) is then exactly rank-deficient
  for the solver, in a way that depends only on G — hence the same for any labelling
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
* Weights. The projection R(Du + y*) is unique but y* is not when G is singular. The weights
  are the minimum-norm point (in the scaled variables x = D v) of the solution set
  {v ≥ u : Jᵀv = Jᵀv*}, so they satisfy Proposition 1's v ≥ u (u + z* when G is
  non-singular). It is the minimum-norm representation D⁻¹ V_k V_kᵀ (Du + y*) of the projection
  moved along the null space N of G by the least-distance problem of Lawson & Hanson (ch. 23);
  unique, so independent of the labelling of the tasks, and O(1): the solver's own y* is not
  (nearly dependent active sets gave weights ~1e6, which float32 rounded into conflicts). The
  move is capped at 10·‖D u‖ (see :meth:`_Factored._weights_in_solution_set`): beyond, on
  matrices stationary up to rounding, the minimum-norm representation is kept, outside v ≥ u.
  Regression: the earlier weights were that representation everywhere, e.g. (0, 0) for UPGrad
  and (−2e-17, 2e-17) for DualProj on g, −g, where the definition gives (1, 1) and (½, ½).

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

import numpy as np
import torch
from torch import Tensor

from . import _compiled
from ._precision import rank_rtol

__all__ = ["dual_cone_weights", "dual_cone_weights_many", "nonneg_qp"]

_EPS = float(np.finfo(np.float64).eps)
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
# Smallest eigenvalue of C, relative to the largest, above which the ridged problem is solved
# from a block-pivoting warm start (see _Factored.nnls).
_WARM_COND = 1e-6
# Largest move along the null space of G, relative to ‖D u‖, by which the reported weights are
# brought into v ≥ u (see _Factored._weights_in_solution_set).
_FEASIBLE_MOVE = 10.0
# Violations of v ≥ u below this many T·‖x*‖·eps count as rounding (then clamped), and the
# largest violation, relative to ‖D u‖_∞, a least-distance solution may leave (measured ≤ 1e-12).
_FEASIBLE_SLACK = 16 * _EPS
_LDP_TOL = 1e-9


class _Problem:
    """``min_{y ≥ 0} ‖R y − b‖² + ridge·‖y‖²``: the factor, the right-hand side, and the normal
    matrix RᵀR + ridge·I formed once for all the passive solves.

    The ridge is kept apart rather than stacked under R as rows √ridge·I (as the problem is
    usually written): the same arithmetic on half the rows, which matters for the T
    projections of UPGrad.
    """

    def __init__(self, r: np.ndarray, b: np.ndarray, ridge: float, normal: np.ndarray) -> None:
        self.r, self.b, self.ridge, self.normal = r, b, ridge, normal
        self.num = r.shape[1]

    def neg_grad(self, y: np.ndarray) -> np.ndarray:
        """Minus the gradient of ½(‖R y − b‖² + ridge·‖y‖²): positive = increasing y_j helps."""
        g = self.r.T @ (self.b - self.r @ y)
        return g - self.ridge * y if self.ridge else g

    def passive_solve(self, passive: list[int]) -> np.ndarray:
        """``argmin ‖R_P y − b‖² + ridge·‖y‖²`` (minimum-norm when rank-deficient), full length."""
        idx = np.array(passive)
        a = self.r.take(idx, 1)
        normal = self.normal.take(idx, 0).take(idx, 1)
        try:
            chol = np.linalg.cholesky(normal)
        except np.linalg.LinAlgError:
            chol = None
        out = np.zeros(self.num)
        if chol is not None and float(np.diagonal(chol).min()) ** 2 > _CHOL_MIN:
            # Corrected semi-normal equations (Björck 1987): one refinement step with the
            # residual formed from R_P gives the accuracy of a QR solve. The normal matrix is
            # safely positive definite here (cond ≲ 1e10), so an LU solve is as accurate as the
            # Cholesky one.
            sol = np.linalg.solve(normal, a.T @ self.b)
            corr = a.T @ (self.b - a @ sol)
            if self.ridge:
                corr -= self.ridge * sol
            sol = sol + np.linalg.solve(normal, corr)
        elif self.ridge:
            stacked = np.concatenate([a, self.ridge**0.5 * np.eye(len(passive))])
            rhs = np.concatenate([self.b, np.zeros(len(passive))])
            sol = np.linalg.lstsq(stacked, rhs, rcond=None)[0]
        else:
            sol = np.linalg.lstsq(a, self.b, rcond=None)[0]
        out[idx] = sol
        return out


def _block_pivot(prob: _Problem, tol: float) -> tuple[list[int], np.ndarray | None]:
    """A passive set for the problem by block principal pivoting (Júdice & Pires 1994, "A block
    principal pivoting algorithm for large-scale strictly monotone linear complementarity
    problems"; Kim & Park 2011, "Fast nonnegative matrix factorization: an active-set-like
    method and comparisons", Algorithm 2), used only as a warm start.

    Lawson–Hanson moves one coordinate per step, so a UPGrad projection with ~T/2 binding
    constraints costs ~T/2 passive solves, T projections ~T²/2 (1900 solves at T = 64). Block
    pivoting exchanges every infeasible coordinate at once and typically ends in a handful of
    solves. With full exchanges limited by Murty's backup rule (one coordinate, the largest
    index, after three exchanges that did not reduce the number of infeasible coordinates), it
    terminates finitely when RᵀR + ridge·I is positive definite, which the ridge of the
    projections guarantees. Its answer is only a starting point: :func:`_lawson_hanson` then
    checks the same optimality conditions as from zero and continues if any fails, so the
    result is Lawson–Hanson's whatever happens here (at most ``4·n + 10`` solves, then it stops).

    Returns the passive set and the least-squares solution on it (None if it gave up).
    """
    num = prob.num
    passive = np.zeros(num, dtype=bool)
    best, backup = num + 1, 3
    for _ in range(4 * num + 10):
        idx = np.flatnonzero(passive)
        x = prob.passive_solve(idx.tolist()) if idx.size else np.zeros(num)
        wrong = np.where(passive, x <= 0, prob.neg_grad(x) > tol)
        count = int(wrong.sum())
        if count == 0:
            return idx.tolist(), x
        if count < best:
            best, backup = count, 3
            passive ^= wrong
        elif backup > 0:
            backup -= 1
            passive ^= wrong
        else:
            last = int(np.flatnonzero(wrong)[-1])
            passive[last] = not passive[last]
    return np.flatnonzero(passive).tolist(), None  # gave up: a guess, not yet solved


def _lawson_hanson(
    prob: _Problem, max_iter: int, start: list[int] | None = None, start_sol: np.ndarray | None = None
) -> np.ndarray:
    """``argmin_{y ≥ 0} ‖R y − b‖² + ridge·‖y‖²`` (Lawson & Hanson 1974, Algorithm 23.10).

    ``start``: a guess of the passive set (from :func:`_block_pivot`). Its coordinates whose
    least-squares value is not positive are removed until the rest are all positive; that
    solution is feasible and is the least-squares solution on its support, which is all the
    algorithm's main loop assumes of its iterate, so it proceeds from there exactly as it
    would from zero (its optimality test decides the end). ``start_sol``, if given, is that
    least-squares solution on ``start`` (saves its solve).
    """
    num = prob.num
    y = np.zeros(num)
    tol = _KKT_TOL * float(np.linalg.norm(prob.b))
    passive: list[int] = []
    while start:
        s = prob.passive_solve(start) if start_sol is None else start_sol
        start_sol = None
        positive = [k for k in start if float(s[k]) > 0]
        if len(positive) == len(start):
            y, passive = s, start
            break
        start = positive
    blocked: set[int] = set()  # coordinates whose entry was undone by rounding this round
    for _ in range(max_iter):
        grad = prob.neg_grad(y)
        closed = passive + list(blocked)
        if len(closed) == num:
            break
        grad[closed] = -np.inf
        j = int(np.argmax(grad))  # the first of the largest, as in Lawson & Hanson
        if not float(grad[j]) > tol:
            break
        passive.append(j)
        while True:
            s = prob.passive_solve(passive)
            sp = s[passive]
            if bool((sp > 0).all()):
                y = s
                break
            # Walk from y towards s until the first passive coordinate hits zero; drop those.
            yp = y[passive]
            neg = sp <= 0
            ratio = np.where(neg, yp / np.where(neg, yp - sp, 1.0), np.inf)
            alpha = min(max(float(ratio.min()), 0.0), 1.0)
            y = y + alpha * (s - y)
            first = passive[int(np.argmin(ratio))]
            keep = [k for k in passive if float(y[k]) > 0 and k != first and not (k == j and alpha == 0.0)]
            y[[k for k in passive if k not in keep]] = 0.0
            if j not in keep and alpha == 0.0:
                blocked.add(j)  # entering j cannot make progress: rounding, skip it once
            passive = keep
            if not passive:
                break
        if passive and j in passive:
            blocked.clear()
    return np.maximum(y, 0.0)


def _least_distance(e: np.ndarray, h: np.ndarray) -> np.ndarray | None:
    """``argmin ‖τ‖`` subject to ``E τ ≥ h`` (Lawson & Hanson 1974, ch. 23, Algorithm LDP): with
    û the NNLS solution of min_{û ≥ 0} ‖[Eᵀ; hᵀ] û − e_{m+1}‖ and r its residual, τ = −r_{1:m} /
    r_{m+1} (r_{m+1} = −‖r‖² < 0 when the constraints are feasible). None if rounding left
    r_{m+1} ≥ 0 (an infeasible-looking system).
    """
    num, dim = e.shape
    f = np.concatenate([e.T, h[None, :]])
    b = np.zeros(dim + 1)
    b[dim] = 1.0
    u = _lawson_hanson(_Problem(f, b, 0.0, f.T @ f), 10 * num + 50)
    r = f @ u - b
    if not float(r[dim]) < 0:
        return None
    return -r[:dim] / float(r[dim])


def _lstsq_cut(a: np.ndarray, b: np.ndarray, normal: np.ndarray, rcond: float) -> np.ndarray:
    """``lstsq(a, b, rcond)`` (singular values ≤ rcond·σ_max treated as 0), cheaply when no
    singular value is near the cut-off.

    The eigenvalues σ_i² of ``normal`` = aᵀa are computed to ~eps·σ_max² absolute, so when all
    exceed 2·rcond²·σ_max² (far above that error for rcond = 1e-5) no singular value is cut and
    the answer is the full-rank least-squares solution, computed by corrected semi-normal
    equations (Björck 1987) to the accuracy of a QR solve (cond(a) < 1/rcond). Otherwise, or if
    in doubt, the SVD solve (LAPACK gelsd) as before; it costs ~10× more at T = 64.
    """
    eig = np.linalg.eigvalsh(normal)
    if eig.size and float(eig[0]) > 2 * rcond * rcond * float(eig[-1]):
        sol = np.linalg.solve(normal, a.T @ b)
        return sol + np.linalg.solve(normal, a.T @ (b - a @ sol))
    return np.linalg.lstsq(a, b, rcond=rcond)[0]


class _Factored:
    """Jacobi scaling and truncated factor of a Gram matrix, shared by several right-hand sides.

    Everything runs in numpy on float64 arrays: the solver is many small dependent steps on
    arrays of at most T entries, where a numpy operation costs ~1 µs and a torch one several.
    """

    def __init__(self, gram: np.ndarray) -> None:
        diag = np.diagonal(gram)
        self.num = gram.shape[0]
        self.live = np.flatnonzero(diag > 0)  # a zero row of G: its z_j changes nothing
        self.d = np.sqrt(diag[self.live])
        cos = gram[self.live[:, None], self.live[None, :]] / self.d[:, None] / self.d[None, :]
        # torch's eigh, not numpy's: numpy's BLAS threads ignore torch.set_num_threads and, on
        # a busy machine, spin for ~50 ms of CPU time on a 64×64 problem.
        lam_t, vecs_t = torch.linalg.eigh(torch.from_numpy((cos + cos.T) / 2))
        lam, vecs = lam_t.numpy(), vecs_t.numpy()
        # G's own precision sets the noise level: float32 entries (float32 gradients through the
        # compiled kernels) put the null eigenvalues at ±1e-8·λ_max (see _precision).
        rtol = rank_rtol(gram, _RANK_RTOL * cos.shape[0] * _EPS)
        keep = lam > rtol * float(lam.max()) if lam.size else lam > 0
        self.basis = vecs[:, keep]  # V_k: orthonormal basis of the (numerical) range of C
        self.null = vecs[:, ~keep]  # N: its complement, along which the weights are free
        self.r = np.sqrt(lam[keep])[:, None] * self.basis.T  # R = Λ_k^{1/2} V_kᵀ, Rᵀ R ≈ C
        # Block pivoting is used as a warm start only where the problem's solution is well
        # determined: C of full numerical rank with cond(C) ≤ 1e6 (see nnls).
        self.well_conditioned = bool(keep.all()) and lam.size > 0 and float(lam[0]) > _WARM_COND * float(lam[-1])
        self.rtr = (torch.from_numpy(self.r).T @ torch.from_numpy(self.r)).numpy()  # as eigh above
        self._ridged: dict[float, np.ndarray] = {}

    def nnls(self, b: np.ndarray, max_iter: int | None, ridge: float = 0.0) -> np.ndarray:
        """y ≥ 0 minimising ‖R y − b‖² + ridge·‖y‖² (on the live coordinates)."""
        if not float(np.abs(b).max()) > 0:
            return np.zeros(self.live.size)
        if ridge not in self._ridged:  # the same normal matrix for every right-hand side
            self._ridged[ridge] = self.rtr + ridge * np.eye(self.live.size) if ridge else self.rtr
        prob = _Problem(self.r, b, ridge, self._ridged[ridge])
        cap = max_iter or 10 * self.live.size + 50
        if ridge > 0 and self.well_conditioned:
            # Well-conditioned RᵀR + ridge·I: block pivoting finds (nearly always) the optimal
            # passive set in a few solves, Lawson–Hanson confirms it (see _block_pivot). Not on
            # a (nearly) singular C: there the ridge alone (1e-11) makes the minimiser unique,
            # the objective is flat to ~1e-11 along the null space, and points that pass the
            # optimality test to rounding tolerance differ along it; Lawson–Hanson from zero
            # picks one that does not depend on the labelling of the tasks, a warm start from
            # block pivoting does not (TorchJD's rank-deficient property matrices: UPGrad
            # moved by 0.07 under relabelling).
            return _lawson_hanson(prob, cap, *_block_pivot(prob, _KKT_TOL * float(np.linalg.norm(b))))
        return _lawson_hanson(prob, cap)

    def projection_weights(self, u: np.ndarray) -> np.ndarray:
        """Weights ``w`` with ``Jᵀw`` the projection of ``Jᵀu`` onto the dual cone: active set from
        the ridge-regularised NNLS, projection re-solved without the ridge on it, the
        minimum-norm weights with w ≥ u (see the module docstring)."""
        return self.projection_weights_many(u[None, :])[0]

    def projection_weights_many(self, us: np.ndarray) -> np.ndarray:
        """:meth:`projection_weights` for every row of ``us`` (``(m, T)``).

        The non-negative least squares and their polish run in the compiled solver
        (csrc/cpu/nnls.cpp, the same steps in C++) when it is built (see :mod:`._compiled`);
        rows it declines (a passive system or a polish that needs SVD least squares)
        and every row without it run :meth:`_projection_y` here.
        """
        w = us.copy()
        if self.live.size == 0:
            return w
        du = us[:, self.live] * self.d
        ys = np.zeros((us.shape[0], self.live.size))
        done = np.zeros(us.shape[0], dtype=bool)
        solver = _compiled.solver("dual_cone_nnls")
        if solver is not None:
            if _RIDGE not in self._ridged:
                self._ridged[_RIDGE] = self.rtr + _RIDGE * np.eye(self.live.size)
            y_t, ok_t = solver(
                torch.from_numpy(self.r),
                torch.from_numpy(self.rtr),
                torch.from_numpy(self._ridged[_RIDGE]),
                torch.from_numpy(-(du @ self.r.T)),
                _RIDGE,
                self.well_conditioned,
                _POLISH_RCOND,
                10 * self.live.size + 50,
            )
            ys, done = y_t.numpy(), ok_t.numpy()
        for i in np.flatnonzero(~done):
            ys[i] = self._projection_y(du[i])
        for row in range(us.shape[0]):
            x, feasible = self._weights_in_solution_set(du[row] + np.maximum(ys[row], 0.0), du[row])
            w[row, self.live] = x / self.d
            if feasible:  # v ≥ u exactly: x ≥ D u holds up to rounding, and x / d rounds again
                w[row, self.live] = np.maximum(w[row, self.live], us[row, self.live])
        return w

    def _weights_in_solution_set(self, x_star: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, bool]:
        """The reported point of the solution set, in the Jacobi-scaled weights x = D v, and
        whether it satisfies x ≥ ``lower`` (= D u).

        The solution set is {x ≥ D u : V_kᵀ x = V_kᵀ x*} (the same projection; x* = D u + y* is
        the solver's point). Reported: its minimum-norm point. With x = V_k a + N τ (a = V_kᵀ x*,
        ‖x‖² = ‖a‖² + ‖τ‖²) that is the least-distance problem min ‖τ‖ s.t. N τ ≥ D u − V_k a,
        feasible at τ = Nᵀx*; τ = 0 (the minimum-norm representation V_k a) when it is feasible,
        as for every non-singular G. The move N τ is taken only up to ``_FEASIBLE_MOVE``·‖D u‖:
        N spans the directions treated as null, which are null only to rounding when J is
        rank-deficient only to rounding (float32 data), so a move changes the update by up to
        σ·‖N τ‖ (σ: the largest singular value cut); and on matrices that are weakly or strongly
        stationary up to rounding (TorchJD's float32 property matrices) the bound is met only
        10²–10⁵ times farther out: there the strongly stationary T = 20, P = 100 matrices got
        updates ~1e-5 instead of 0, and relabelling moved UPGrad by 3e-5 (float32 combination).
        The minimum-norm representation V_k a is reported there instead (outside v ≥ u; the
        update is the solver's).
        """
        if self.null.shape[1] == 0:
            return x_star, True
        fixed = self.basis @ (self.basis.T @ x_star)
        # Violations at the rounding level of V_k V_kᵀ x* count as none (the caller clamps them):
        # they lie along the range too, where no null move can repair them.
        gap = lower - fixed
        gap = np.where(gap > _FEASIBLE_SLACK * self.num * float(np.abs(x_star).max()), gap, np.minimum(gap, 0.0))
        if not bool((gap > 0).any()):
            return fixed, True
        # In units of D u, so that an accepted τ is O(1): LDP's τ = −r/r_{m+1} loses accuracy as
        # ‖τ‖ grows (r_{m+1} = −1/(1 + ‖τ‖²)).
        unit = max(float(np.abs(lower).max()), float(gap.max()))
        tau = _least_distance(self.null, gap / unit)
        if tau is None or unit * float(np.linalg.norm(tau)) > _FEASIBLE_MOVE * float(np.linalg.norm(lower)):
            return fixed, False
        x = fixed + unit * (self.null @ tau)
        if float((lower - x).max()) > _LDP_TOL * unit:  # an inaccurate solve: not clamped into the update
            return fixed, False
        return x, True

    def _projection_y(self, du: np.ndarray) -> np.ndarray:
        """The y* of one projection (``du`` = D u on the live coordinates), in numpy."""
        b = -(self.r @ du)
        y = self.nnls(b, None, _RIDGE)
        passive = np.flatnonzero(y > 0)
        if passive.size:
            # Polish: the unregularised least-squares solution on the same active set.
            a = self.r.take(passive, 1)
            sol = _lstsq_cut(a, b, self.rtr.take(passive, 0).take(passive, 1), _POLISH_RCOND)
            if bool((sol > 0).all()):
                y = np.zeros_like(y)
                y[passive] = sol
        return y


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


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
    z = np.zeros(gram.shape[0])
    fac = _Factored(_np(gram))
    if fac.live.size == 0:
        return torch.from_numpy(z)
    if u is not None:
        b = -(fac.r @ (fac.d * _np(u)[fac.live]))
    elif lin is not None:
        # Rᵀ b = −lin/d: the least-squares b is the component of lin in the range of G.
        b = np.linalg.lstsq(fac.r.T, -_np(lin)[fac.live] / fac.d, rcond=None)[0]
    else:
        raise ValueError("lin: give lin = G u, or u")
    z[fac.live] = fac.nnls(b, max_iter) / fac.d
    return torch.from_numpy(z)


def _regularised(gram: np.ndarray, reg_eps: float) -> np.ndarray:
    if reg_eps > 0:
        trace = float(np.diagonal(gram).sum())
        return (gram / trace if trace > 0 else np.zeros_like(gram)) + reg_eps * np.eye(gram.shape[0])
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
        minimum-norm weights ``w ≥ u`` of the same projection (the minimum-norm ones without the
        bound where it would need a move beyond 10·‖D u‖, see
        :meth:`_Factored._weights_in_solution_set`).
    """
    return torch.from_numpy(_Factored(_regularised(_np(gram), reg_eps)).projection_weights(_np(u)))


def dual_cone_weights_many(gram: Tensor, us: Tensor, reg_eps: float = 0.0) -> Tensor:
    """:func:`dual_cone_weights` for the rows of ``us`` (``(m, T)``), factoring G once."""
    return torch.from_numpy(_Factored(_regularised(_np(gram), reg_eps)).projection_weights_many(_np(us)))
