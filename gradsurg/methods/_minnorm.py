"""The exact min-norm point of a convex hull, computed from the Gram matrix of its vertices.

Wolfe's algorithm (P. Wolfe 1976, "Finding the nearest point in a polytope", Math. Programming
11:128-149) is an active-set method that ends after finitely many steps at the exact minimiser
of ‖Σ w_i g_i‖ over the simplex, up to the precision of the small linear solves it makes. It
only needs dot products, so it runs on G. MGDA uses it directly; CAGrad uses it on a shifted
Gram matrix. Frank-Wolfe, which several libraries use for MGDA, converges sublinearly and stops
short of float64 precision.

Scale robustness (gradient norms differing by up to ~1e30, i.e. Gram diagonals by ~1e60). The
earlier version tested optimality as min_j (G w)_j ≥ wᵀGw − 1e-13·max_i G_ii: an absolute
tolerance at the scale of the largest gradient, under which whole small tasks vanish (with
g = (1, 0, 0), (−1, 0, 0), (0, 1e7, 0) it stopped at g_1, which conflicts with g_2, instead of
the exact answer 0), and it solved the corral's affine problem on G itself, whose entries then
span the square of the norm ratio. Now every test and solve is scale-free:

* optimality (Wolfe's step 1) is tested vertex by vertex, relative to what rounding can do to
  the quantities compared: vertex j improves the point x = Σ w_k g_k iff
  ‖x‖² − ⟨g_j, x⟩ > tol·m·(‖g_j‖ + m), m = Σ w_k ‖g_k‖ (the rounding level of G w and wᵀGw);
  among the improving vertices the one that decreases ‖x‖ most along its segment is taken;
* the affine minimiser of the corral (Wolfe's step 2) is solved as a least-squares problem in
  the differences d_i = g_i − g_r from its smallest vertex g_r, with the columns d_i scaled to
  unit length (Jacobi scaling), so that its matrix has unit diagonal whatever the norms are;
  the weights of large vertices then come out with full relative precision even when they are
  ~1e-60; the solution is then refined with residuals of G_S v = λ1, 1ᵀv = 1 computed exactly
  from G and rounded once (Dekker's exact products, Shewchuk's exact sums), which recovers the
  exact answer where large vertices cancel each other (g_2 = −g_1/2 beside small vertices);
* a coefficient counts as leaving the corral when its contribution v_i‖g_i‖ to x is ≤ 0 at
  rounding level of Σ_k |v_k|‖g_k‖ (not when v_i itself is small);
* finite termination: each major cycle must strictly decrease ‖x‖; a step that rounding makes
  useless (the entering vertex leaves again at once) ends the loop, and ``max_iter`` bounds it.

Zero vectors: if some g_i = 0, the minimum is 0 and the weights are uniform over the zero
vectors.

Accuracy (tests/methods/test_hard_inputs.py): for vertices in general position the point is
exact to ~1e-16 × Σ_i w_i‖g_i‖ for norm ratios up to 1e30 and T up to 64, checked against the
exact rational answer (face enumeration) and Wolfe's optimality conditions evaluated exactly.
The limit of any solver on a float64 G: when three or more vertices are affinely dependent to
within ~1e-8 of their norms (e.g. a vertex of norm 1e-8·‖g‖ next to a segment through 0), the
corral's system is singular to working precision and the point is exact only to that level
(~1e-8 × Σ_i w_i‖g_i‖), the square root of G's own rounding.

Speed. The solver is many small dependent steps on arrays of at most T entries, so it runs in
numpy (≈1 µs per operation; a torch operation on a tiny tensor costs 5–10 µs) and only the
public :func:`min_norm_weights` converts from and to torch. T = 64 takes a few ms, T = 16 well
under 1 ms (``python -m benchmarks.solves``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from . import _compiled

__all__ = ["min_norm_weights", "min_norm_weights_np"]

# Relative tolerance of the optimality test (see the module docstring): a few hundred ulps.
_KKT_TOL = 1e-13
# A coefficient whose contribution |v_i|·‖g_i‖ is at or below this fraction of Σ|v_k|·‖g_k‖
# (and not positive beyond it) counts as leaving the corral.
_ZERO_TOL = 1e-15
# Iterative refinement of the corral's affine solve: at most this many steps, until the
# (scaled) residual is at this level.
_REFINE = 6
_REFINE_TOL = 1e-16
# Smallest Cholesky pivot² (relative to the unit diagonal) for which the corral's system is
# solved by Cholesky rather than by SVD least squares.
_CHOL_MIN = 1e-10
_TINY = float(np.finfo(np.float64).tiny)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = 134217729.0 * a  # 2^27 + 1: Dekker's splitting into two 26-bit halves
    hi = c - (c - a)
    return hi, a - hi


class _Corral:
    """The affine problem of one corral S: G_S, its Dekker split, and a factored solver of the
    bordered system (built once, used for the solve and every refinement step)."""

    def __init__(self, gram: np.ndarray, corral: list[int], norms: np.ndarray) -> None:
        idx = np.array(corral)
        self.k = k = idx.shape[0]
        self.gram_s = gram_s = gram[idx[:, None], idx[None, :]]
        self.n_s = norms[idx]
        self.g_hi, self.g_lo = _split(gram_s)
        self.pos = pos = int(np.argmin(self.n_s))
        # With r = pos and v = h e_r + Σ_{i≠r} t_i (e_i − e_r), the differences of the rows from
        # row r eliminate λ: Σ_k ⟨d_i, d_k⟩ t_k = f_i − f_r − h ⟨d_i, g_r⟩ with d_i = g_i − g_r,
        # solved after scaling t_i by ‖d_i‖ (unit diagonal).
        self.rest = rest = np.concatenate([np.arange(pos), np.arange(pos + 1, k)])
        g_or = gram_s[rest, pos]
        g_rr = gram_s[pos, pos]
        self.g_shift = g_or - g_rr
        dd = gram_s[rest[:, None], rest[None, :]] - g_or[:, None] - g_or[None, :] + g_rr
        dn = np.sqrt(np.maximum(np.diagonal(dd), 0.0))
        live = dn > 0  # d_i = 0: g_i duplicates g_r and adds nothing (t_i = 0)
        self.inv = inv = np.where(live, 1.0 / np.where(live, dn, 1.0), 0.0)
        self.m = m = dd * inv[:, None] * inv[None, :]
        # m is unit-diagonal PSD. Safely positive definite (smallest Cholesky pivot² above
        # _CHOL_MIN, so cond(m) ≲ 1e10): solve with the inverse of its Cholesky factor, which
        # every refinement step reuses (two small products per solve); the exact residuals of
        # the refinement correct what this loses against a backward-stable solve. Otherwise
        # minimum-norm least squares (SVD, LAPACK gelsd), which handles a singular m.
        self.linv: np.ndarray | None = None
        if k > 1:
            try:
                chol = np.linalg.cholesky(m)
            except np.linalg.LinAlgError:
                chol = None
            if chol is not None and float(np.diagonal(chol).min()) ** 2 > _CHOL_MIN:
                self.linv = np.linalg.inv(chol)

    def solve(self, f: np.ndarray, h: float) -> tuple[np.ndarray, float]:
        """Solve ``G_S v − λ 1 = f``, ``1ᵀ v = h`` for ``(v, λ)`` (``G_S`` may be near singular)."""
        v = np.zeros(self.k)
        pos = self.pos
        v[pos] = h
        if self.k > 1:
            rhs = (f[self.rest] - f[pos] - h * self.g_shift) * self.inv
            if self.linv is not None:
                tau = self.linv.T @ (self.linv @ rhs)
            else:
                tau = np.linalg.lstsq(self.m, rhs, rcond=None)[0]
            t = tau * self.inv
            v[self.rest] = t
            v[pos] = h - t.sum()
        return v, float(self.gram_s[pos] @ v - f[pos])

    def residual(self, v: np.ndarray, lam: float, f: np.ndarray) -> np.ndarray:
        """``f − (G_S v − λ 1)``, the correctly rounded value of the exact expression.

        Every product G_ij·(−v_j) is split exactly into p_ij + e_ij (Dekker 1971, "A
        floating-point technique for extending the available precision": TwoProduct by
        splitting), and each row's terms f_i, p_ij, e_ij, λ are added by ``math.fsum`` (Shewchuk
        1997, "Adaptive precision floating-point arithmetic"), which rounds the exact sum once.
        The previous double-double accumulation (Ogita, Rump & Oishi 2005, "Accurate sum and dot
        product") was as accurate as twice the working precision; this is at least as accurate,
        and it is one vectorised product plus one ``fsum`` per row instead of k sequential
        vector updates.
        """
        k = self.k
        a = -v
        a_hi, a_lo = _split(a)
        p = self.gram_s * a
        e = ((self.g_hi * a_hi - p) + self.g_hi * a_lo + self.g_lo * a_hi) + self.g_lo * a_lo
        terms = np.empty((k, 2 * k + 2))
        terms[:, 0] = f
        terms[:, 1 : k + 1] = p
        terms[:, k + 1 : 2 * k + 1] = e
        terms[:, -1] = lam
        return np.array([math.fsum(row) for row in terms.tolist()])


def _affine_min_norm(gram: np.ndarray, corral: list[int], norms: np.ndarray) -> np.ndarray:
    return _affine_solve(gram, corral, norms)[0]


def _affine_solve(gram: np.ndarray, corral: list[int], norms: np.ndarray) -> tuple[np.ndarray, bool]:
    """Weights ``v`` (summing to 1) of the min-norm point of the affine hull of ``corral``.

    The KKT system G_S v = λ 1, 1ᵀ v = 1 is solved in the differences from the corral's
    smallest vertex with unit-length columns (:meth:`_Corral.solve`), then refined with
    residuals computed exactly from G itself (:meth:`_Corral.residual`, Wilkinson's iterative
    refinement), so the answer is that of the given G even where large vertices nearly cancel.
    Also says whether the system was safely non-singular (solved by Cholesky, not by SVD).
    """
    k = len(corral)
    if k == 1:
        return np.ones(1), True
    sys = _Corral(gram, corral, norms)
    zero = np.zeros(k)
    v, lam = sys.solve(zero, 1.0)
    prev = math.inf
    for _ in range(_REFINE):
        r_g = sys.residual(v, lam, zero)
        r_1 = 1.0 - float(v.sum())
        scale = float(np.abs(v) @ sys.n_s)
        size = max(float((np.abs(r_g) / sys.n_s).max()) / scale, abs(r_1))
        if not size < prev / 2 or size <= _REFINE_TOL:
            break
        prev = size
        dv, dlam = sys.solve(r_g, r_1)
        v = v + dv
        lam = lam + dlam
    return v / v.sum(), sys.linv is not None


def min_norm_weights_np(gram: np.ndarray, max_iter: int | None = None, start: np.ndarray | None = None) -> np.ndarray:
    """:func:`min_norm_weights` on a float64 numpy array.

    Runs the compiled twin of this solver (csrc/cpu/minnorm.cpp, the same steps in C++, ~40×
    faster at T = 16) when the extension is built (see :mod:`._compiled`); it declines
    (and this numpy solver runs) for T ≤ 2 and whenever a corral's system is not safely
    non-singular, the case that needs SVD least squares.
    """
    solver = _compiled.solver("min_norm_weights")
    if solver is not None:
        out = solver(
            torch.from_numpy(gram), max_iter or 50 * gram.shape[0], None if start is None else torch.from_numpy(start)
        )
        if out.numel():
            return out.numpy()
    return _min_norm_numpy(gram, max_iter, start)


def _min_norm_numpy(gram: np.ndarray, max_iter: int | None = None, start: np.ndarray | None = None) -> np.ndarray:
    """The solver of :func:`min_norm_weights` in numpy (see there).

    ``start``: weights of a nearby problem (CAGrad's previous shifted hull), whose support is
    tried as the first corral. It is taken only if the affine minimiser on it has positive
    weights and a safely non-singular system (affinely independent vertices, so the weights
    of the point are unique); Wolfe's major cycles then go on from that corral exactly as from
    a single vertex, to the same min-norm point. Otherwise the solve starts cold.
    """
    num_tasks = gram.shape[0]
    diag = np.maximum(np.diagonal(gram), 0.0)
    zero = diag <= 0
    if bool(zero.any()):
        return zero / float(zero.sum())
    if num_tasks == 1:
        return np.ones(1)
    if num_tasks == 2:
        # Two vertices: the minimiser of ‖γ g_1 + (1−γ) g_2‖² on the segment has the closed form
        # γ = (G_22 − G_12) / ‖g_1 − g_2‖², clipped to [0, 1] (Sener & Koltun 2018, Alg. 1).
        # Each quantity is a sum of same-scale terms, so it is accurate for any norm ratio.
        diff = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1]
        if not diff > 0:  # g_1 = g_2: every point of the segment is the same vector
            return np.full(2, 0.5)
        gamma = min(max(float((gram[1, 1] - gram[0, 1]) / diff), 0.0), 1.0)
        return np.array([gamma, 1 - gamma])
    norms = np.sqrt(diag)
    w = np.zeros(num_tasks)
    first = int(np.argmin(diag))
    w[first] = 1.0
    corral = [first]
    if start is not None:
        support = np.flatnonzero(start > 0).tolist()
        if len(support) > 1:
            v, safe = _affine_solve(gram, support, norms)
            contrib = v * norms[support]
            if safe and bool((contrib > _ZERO_TOL * float(np.abs(contrib).sum())).all()):
                w[first] = 0.0
                w[support] = v
                corral = support
    prev_norm_sq = math.inf
    for _ in range(max_iter or 50 * num_tasks):
        gw = gram @ w
        norm_sq = float(w @ gw)
        if not norm_sq < prev_norm_sq:
            break  # no strict decrease: rounding stalls the algorithm at its exact answer
        prev_norm_sq = norm_sq
        m = float(w @ norms)
        viol = norm_sq - gw
        improving = viol > _KKT_TOL * m * (norms + m)
        improving[corral] = False
        if not bool(improving.any()):
            break
        # The vertex whose segment [x, g_j] decreases ‖x‖ most: viol_j² / ‖x − g_j‖².
        dist_sq = np.maximum(norm_sq - 2 * gw + diag, _TINY)
        gain = np.where(improving, viol * viol / dist_sq, -1.0)
        j = int(np.argmax(gain))
        before = sorted(corral)
        corral.append(j)
        while True:
            v = _affine_min_norm(gram, corral, norms)
            contrib = v * norms[corral]
            positive = contrib > _ZERO_TOL * float(np.abs(contrib).sum())
            if bool(positive.all()):
                w[:] = 0.0
                w[corral] = v
                break
            # The affine minimiser leaves the simplex: walk from w towards it until the first
            # coefficient reaches zero, and drop the vertices whose coefficient did.
            idx = np.array(corral)
            w_s = w[idx]
            den = w_s - v
            leaving = ~positive & (den > 0)
            ratio = np.where(leaving, w_s / np.where(den > 0, den, 1.0), 1.0)
            theta = min(max(float(ratio.min()), 0.0), 1.0)
            w_s = (1 - theta) * w_s + theta * v
            contrib = w_s * norms[idx]
            keep = contrib > _ZERO_TOL * float(np.abs(contrib).sum())
            if not bool(keep.any()):
                keep = contrib == contrib.max()
            w[:] = 0.0
            w[idx[keep]] = w_s[keep]
            w /= w.sum()
            corral = idx[keep].tolist()
        if sorted(corral) == before:
            break  # the entering vertex left at once: no progress possible in floating point
    return w


def min_norm_weights(gram: Tensor, max_iter: int | None = None) -> Tensor:
    """Weights on the simplex of the min-norm point of the convex hull of vectors with Gram ``gram``.

    Args:
        gram: float64 ``(T, T)`` positive semi-definite matrix.
        max_iter: cap on major iterations (default ``50 * T``); Wolfe's algorithm terminates
            finitely, the cap only guards against rounding-induced cycling.

    Returns:
        ``w`` (float64, ``(T,)``, ``w ≥ 0``, ``Σ w = 1``) minimising ``wᵀ G w``. If some vectors
        are zero, the minimum is 0 and ``w`` is uniform over them (every vector zero: uniform).
    """
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    return torch.from_numpy(min_norm_weights_np(g, max_iter))
