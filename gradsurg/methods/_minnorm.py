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
  ~1e-60; the solution is then refined with residuals of G_S v = λ1, 1ᵀv = 1 computed from G
  in double-double arithmetic (Dekker 1971), which recovers the exact answer where large
  vertices cancel each other (g_2 = −g_1/2 beside small vertices);
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
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["min_norm_weights"]

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


def _split(a: Tensor) -> tuple[Tensor, Tensor]:
    c = 134217729.0 * a  # 2^27 + 1: Dekker's splitting into two 26-bit halves
    hi = c - (c - a)
    return hi, a - hi


def _residual(gram_s: Tensor, v: Tensor, lam: float, f: Tensor) -> Tensor:
    """``f − (G_S v − λ 1)`` with compensated (double-double) products and sums (Dekker 1971,
    "A floating-point technique for extending the available precision"; Ogita, Rump & Oishi
    2005, "Accurate sum and dot product"), rounded to float64 at the end."""
    s = f.clone()
    comp = torch.zeros_like(f)
    g_hi, g_lo = _split(gram_s)
    for j in range(v.numel()):
        a = -v[j]
        a_hi, a_lo = _split(a)
        p = gram_s[:, j] * a
        e = ((g_hi[:, j] * a_hi - p) + g_hi[:, j] * a_lo + g_lo[:, j] * a_hi) + g_lo[:, j] * a_lo
        t = s + p
        z = t - s
        comp += ((s - (t - z)) + (p - z)) + e
        s = t
    t = s + lam
    z = t - s
    comp += (s - (t - z)) + (lam - z)
    return t + comp


def _psd_solve(m: Tensor, rhs: Tensor) -> Tensor:
    """Solve ``m x = rhs`` for a unit-diagonal PSD ``m``: Cholesky when ``m`` is safely positive
    definite, else minimum-norm least squares (SVD), which handles singular ``m``."""
    chol, info = torch.linalg.cholesky_ex(m)
    if int(info) == 0 and float(chol.diagonal().min()) ** 2 > _CHOL_MIN:
        return torch.cholesky_solve(rhs.unsqueeze(1), chol)[:, 0]
    return torch.linalg.lstsq(m, rhs.unsqueeze(1), driver="gelsd").solution[:, 0]


def _bordered_solve(gram_s: Tensor, pos: int, f: Tensor, h: float, norms: Tensor) -> tuple[Tensor, float]:
    """Solve ``G_S v − λ 1 = f``, ``1ᵀ v = h`` for ``(v, λ)`` (``G_S`` may be near singular).

    With r = ``pos`` and v = h e_r + Σ_{i≠r} t_i (e_i − e_r), the differences of the rows from
    row r eliminate λ: Σ_k ⟨d_i, d_k⟩ t_k = f_i − f_r − h ⟨d_i, g_r⟩ with d_i = g_i − g_r, solved
    after scaling t_i by ‖d_i‖ (unit diagonal); minimum-norm least squares if singular.
    """
    k = gram_s.shape[0]
    v = torch.zeros(k, dtype=gram_s.dtype)
    v[pos] = h
    if k > 1:
        rest = [i for i in range(k) if i != pos]
        idx = torch.tensor(rest)
        g_or = gram_s[idx, pos]
        dd = gram_s[idx][:, idx] - g_or[:, None] - g_or[None, :] + gram_s[pos, pos]
        dn = dd.diagonal().clamp(min=0.0).sqrt()
        live = dn > 0  # d_i = 0: g_i duplicates g_r and adds nothing (t_i = 0)
        inv = torch.where(live, 1.0 / torch.where(live, dn, 1.0), 0.0)
        m = dd * inv[:, None] * inv[None, :]
        rhs = (f[idx] - f[pos] - h * (g_or - gram_s[pos, pos])) * inv
        tau = _psd_solve(m, rhs)
        t = tau * inv
        v[idx] = t
        v[pos] = h - t.sum()
    lam = float(gram_s[pos] @ v - f[pos])
    return v, lam


def _affine_min_norm(gram: Tensor, corral: list[int], norms: Tensor) -> Tensor:
    """Weights ``v`` (summing to 1) of the min-norm point of the affine hull of ``corral``.

    The KKT system G_S v = λ 1, 1ᵀ v = 1 is solved in the differences from the corral's
    smallest vertex with unit-length columns (:func:`_bordered_solve`), then refined with
    residuals computed in double-double arithmetic from G itself (Wilkinson's iterative
    refinement), so the answer is that of the given G even where large vertices nearly cancel.
    """
    k = len(corral)
    if k == 1:
        return torch.ones(1, dtype=gram.dtype)
    idx = torch.tensor(corral)
    gram_s = gram[idx][:, idx]
    n_s = norms[idx]
    pos = int(torch.argmin(n_s))
    zero = torch.zeros(k, dtype=gram.dtype)
    v, lam = _bordered_solve(gram_s, pos, zero, 1.0, n_s)
    prev = float("inf")
    for _ in range(_REFINE):
        r_g = _residual(gram_s, v, lam, zero)
        r_1 = 1.0 - float(v.sum())
        scale = float(v.abs() @ n_s)
        size = max(float((r_g.abs() / n_s).max()) / scale, abs(r_1))
        if not size < prev / 2 or size <= _REFINE_TOL:
            break
        prev = size
        dv, dlam = _bordered_solve(gram_s, pos, r_g, r_1, n_s)
        v = v + dv
        lam = lam + dlam
    return v / v.sum()


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
    num_tasks = gram.shape[0]
    diag = gram.diagonal().clamp(min=0.0)
    zero = diag <= 0
    if bool(zero.any()):
        return zero.to(gram.dtype) / float(zero.sum())
    if num_tasks == 1:
        return torch.ones(1, dtype=gram.dtype)
    if num_tasks == 2:
        # Two vertices: the minimiser of ‖γ g_1 + (1−γ) g_2‖² on the segment has the closed form
        # γ = (G_22 − G_12) / ‖g_1 − g_2‖², clipped to [0, 1] (Sener & Koltun 2018, Alg. 1).
        # Each quantity is a sum of same-scale terms, so it is accurate for any norm ratio.
        diff = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1]
        if not diff > 0:  # g_1 = g_2: every point of the segment is the same vector
            return torch.full((2,), 0.5, dtype=gram.dtype)
        gamma = ((gram[1, 1] - gram[0, 1]) / diff).clamp(0.0, 1.0)
        return torch.stack([gamma, 1 - gamma])
    norms = diag.sqrt()
    w = torch.zeros(num_tasks, dtype=gram.dtype)
    first = int(torch.argmin(diag))
    w[first] = 1.0
    corral = [first]
    prev_norm_sq = float("inf")
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
        dist_sq = (norm_sq - 2 * gw + diag).clamp(min=torch.finfo(gram.dtype).tiny)
        gain = torch.where(improving, viol * viol / dist_sq, -1.0)
        j = int(torch.argmax(gain))
        before = list(corral)
        corral.append(j)
        while True:
            v = _affine_min_norm(gram, corral, norms)
            contrib = v * norms[corral]
            positive = contrib > _ZERO_TOL * float(contrib.abs().sum())
            if bool(positive.all()):
                w.zero_()
                w[corral] = v
                break
            # The affine minimiser leaves the simplex: walk from w towards it until the first
            # coefficient reaches zero, and drop the vertices whose coefficient did.
            idx = torch.tensor(corral)
            w_s = w[idx]
            den = w_s - v
            leaving = ~positive & (den > 0)
            ratio = torch.where(leaving, w_s / torch.where(den > 0, den, 1.0), 1.0)
            theta = float(ratio.min().clamp(0.0, 1.0))
            w_s = (1 - theta) * w_s + theta * v
            contrib = w_s * norms[idx]
            keep = contrib > _ZERO_TOL * float(contrib.abs().sum())
            if not bool(keep.any()):
                keep = contrib == contrib.max()
            w.zero_()
            w[idx[keep]] = w_s[keep]
            w /= w.sum()
            corral = idx[keep].tolist()
        if sorted(corral) == sorted(before):
            break  # the entering vertex left at once: no progress possible in floating point
    return w
