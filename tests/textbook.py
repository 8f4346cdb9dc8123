"""Independent textbook implementations of the gradient-surgery methods, used as test oracles.

Everything here works on the EXPLICIT per-task gradient vectors ``J`` (a ``(T, P)`` float64
tensor, one row per task), written straight from the papers' formulas and deliberately NOT in
the Gram-matrix form that ``gradsurg`` uses: agreement between the two is the evidence that the
library's Gram-space rewrite of each algorithm is right.

The code favours being obviously correct over being fast (explicit Python loops over tasks,
brute-force enumeration for MGDA, a generic SLSQP solve for CAGrad). None of it imports
``gradsurg``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

__all__ = [
    "sum_",
    "mean",
    "pcgrad",
    "gradvac",
    "cagrad",
    "cagrad_direction",
    "mgda",
    "mgda_weights",
    "imtl_g",
    "imtl_g_alpha",
]


def _check(J: Tensor) -> Tensor:
    if not isinstance(J, Tensor) or J.dim() != 2:
        raise ValueError("J must be a (T, P) tensor")
    return J.detach().to(dtype=torch.float64, device="cpu")


# --------------------------------------------------------------------------------------------
# Sum / mean
# --------------------------------------------------------------------------------------------


def sum_(J: Tensor) -> Tensor:
    """Plain sum of the task gradients, Σ_i g_i (the linear-scalarisation baseline)."""
    J = _check(J)
    out = torch.zeros(J.shape[1], dtype=torch.float64)
    for g in J:
        out = out + g
    return out


def mean(J: Tensor) -> Tensor:
    """Mean of the task gradients, (1/T) Σ_i g_i."""
    J = _check(J)
    return sum_(J) / J.shape[0]


# --------------------------------------------------------------------------------------------
# PCGrad
# --------------------------------------------------------------------------------------------


def pcgrad(J: Tensor, order: Tensor) -> Tensor:
    """PCGrad, Algorithm 1 of Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"
    (NeurIPS 2020, arXiv:2001.06782), with an explicit visiting order.

    For each task i: g_i^PC ← g_i; for each j ≠ i in ``order[i]``: if g_i^PC · g_j < 0 then
    g_i^PC ← g_i^PC − (g_i^PC · g_j) / ‖g_j‖² · g_j, where g_j is the ORIGINAL gradient of task j.
    The update is Σ_i g_i^PC (a sum, as in the paper). A zero g_j has g_i^PC · g_j = 0, so it is
    never projected on.
    """
    J = _check(J)
    T = J.shape[0]
    order = torch.as_tensor(order)
    total = torch.zeros(J.shape[1], dtype=torch.float64)
    for i in range(T):
        g = J[i].clone()
        for j in order[i].tolist():
            if j == i:
                continue
            gj = J[j]
            dot = float(torch.dot(g, gj))
            nsq = float(torch.dot(gj, gj))
            if dot < 0 and nsq > 0:
                g = g - (dot / nsq) * gj
        total = total + g
    return total


# --------------------------------------------------------------------------------------------
# GradVac
# --------------------------------------------------------------------------------------------


def _cos(a: Tensor, b: Tensor) -> float:
    na = float(torch.linalg.vector_norm(a))
    nb = float(torch.linalg.vector_norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    c = float(torch.dot(a, b)) / (na * nb)
    return min(1.0, max(-1.0, c))


def gradvac(J: Tensor, order: Tensor, rho: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Gradient Vaccine, Wang et al. 2021, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models" (ICLR 2021, arXiv:2010.05874),
    Algorithm 1, with an explicit visiting order and the EMA targets φ̂ passed in and returned.

    For each task i: g_i^PC ← g_i; for each j ≠ i in ``order[i]``:
      φ = cos(g_i^PC, g_j) (0 if either norm is 0);
      if φ < φ̂_ij:  g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂_ij √(1−φ²) − φ √(1−φ̂_ij²))
                                          / (‖g_j‖ √(1−φ̂_ij²)) · g_j      (paper eq. 3)
      φ̂_ij ← (1−β) φ̂_ij + β φ   (φ measured before the correction).
    The update is Σ_i g_i^PC. When g_j = 0 the correction is a multiple of the zero vector and
    is skipped (it cannot change anything); when g_i^PC = 0 its coefficient is 0.

    Returns ``(combined, new_rho)``; the diagonal of ``rho`` is unused and copied unchanged.
    """
    J = _check(J)
    T = J.shape[0]
    order = torch.as_tensor(order)
    rho = torch.as_tensor(rho, dtype=torch.float64).clone()
    new_rho = rho.clone()
    total = torch.zeros(J.shape[1], dtype=torch.float64)
    for i in range(T):
        g = J[i].clone()
        for j in order[i].tolist():
            if j == i:
                continue
            gj = J[j]
            target = float(rho[i, j])
            phi = _cos(g, gj)
            if phi < target:
                norm_g = float(torch.linalg.vector_norm(g))
                norm_gj = float(torch.linalg.vector_norm(gj))
                if norm_g > 0 and norm_gj > 0:
                    coef = (
                        norm_g
                        * (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2))
                        / (norm_gj * math.sqrt(1 - target**2))
                    )
                    g = g + coef * gj
            new_rho[i, j] = (1 - beta) * target + beta * phi
        total = total + g
    return total, new_rho


# --------------------------------------------------------------------------------------------
# MGDA (exact min-norm point by active-set enumeration)
# --------------------------------------------------------------------------------------------


def mgda_weights(J: Tensor, neg_tol: float = 1e-12) -> Tensor:
    """Exact MGDA weights: the min-norm point of the convex hull of the task gradients
    (Désidéri 2012; Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018, eq. 3: min_α ‖Σ α_t g_t‖² s.t. α ∈ simplex).

    Brute force: the min-norm point lies in the relative interior of some face conv{g_i : i∈S}
    with S affinely independent, and there it is also the min-norm point of the AFFINE hull of
    that face. For every non-empty S we solve the affine problem through its KKT system

        [ G_SS  1 ] [ w ]   [ 0 ]
        [ 1ᵀ    0 ] [ μ ] = [ 1 ]      (G_SS = J_S J_Sᵀ built from the explicit vectors)

    with least squares (singular when S is affinely dependent), keep solutions whose weights are
    all ≥ −neg_tol, and return the one of smallest norm. 2^T − 1 subsets: fine for T ≤ 10.
    The min-norm POINT is unique; the weights need not be (degenerate families).
    """
    J = _check(J)
    T = J.shape[0]
    # The weights are invariant to a common scale: work with max ‖g_i‖ = 1 so that the KKT
    # system (whose last row has entries 1) is well scaled for lstsq's relative cut-off.
    top = float(torch.linalg.vector_norm(J, dim=1).max())
    if top == 0.0:
        return torch.full((T,), 1.0 / T, dtype=torch.float64)  # every w is optimal
    Jn = (J / top).numpy()
    best_w = None
    best_sq = math.inf
    for size in range(1, T + 1):
        for S in itertools.combinations(range(T), size):
            JS = Jn[list(S)]
            K = np.zeros((size + 1, size + 1))
            K[:size, :size] = JS @ JS.T
            K[:size, size] = 1.0
            K[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
            wS = sol[:size]
            if np.any(wS < -neg_tol) or abs(wS.sum() - 1.0) > 1e-9:
                continue
            wS = np.clip(wS, 0.0, None)
            wS = wS / wS.sum()
            point = wS @ JS
            sq = float(point @ point)
            if sq < best_sq:
                best_sq = sq
                best_w = np.zeros(T)
                best_w[list(S)] = wS
    assert best_w is not None  # singletons are always feasible
    return torch.from_numpy(best_w)


def mgda(J: Tensor) -> Tensor:
    """Combined MGDA update: the min-norm point of conv{g_1, …, g_T} (see :func:`mgda_weights`)."""
    J = _check(J)
    return mgda_weights(J) @ J


# --------------------------------------------------------------------------------------------
# CAGrad
# --------------------------------------------------------------------------------------------


def cagrad_direction(J: Tensor, c: float = 0.4) -> tuple[Tensor, Tensor, float]:
    """Solve the CAGrad dual with SLSQP, as the paper's released code does.

    Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning" (NeurIPS 2021,
    arXiv:2110.14048), eq. (5)-(6): with g0 = mean_i g_i and c' = c‖g0‖,

        w* = argmin_{w ∈ simplex}  g_w · g0 + c' ‖g_w‖,     g_w = Σ_i w_i g_i.

    The objective and its gradient (J g0 + c' J g_w / ‖g_w‖) are evaluated on the explicit
    vectors. SLSQP is run from the uniform point and from every vertex; the best run is kept.

    Returns ``(w*, g_w*, objective value)``.
    """
    J = _check(J)
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
    objective value 0 there) the direction g_w*/‖g_w*‖ is undefined and d = g0 is used. Because
    SLSQP only approaches a kink at 0 loosely, "at 0" is decided on the OBJECTIVE: the origin is
    in the hull (exact MGDA min-norm ≈ 0) and the best objective found is ≥ −zero_tol·scale²
    (scale = largest gradient norm); otherwise the direction of SLSQP's g_w* is used.
    """
    J = _check(J)
    g0 = J.mean(dim=0)
    cprime = c * float(torch.linalg.vector_norm(g0))
    scale = float(torch.linalg.vector_norm(J, dim=1).max()) if J.numel() else 0.0
    _, gw, val = cagrad_direction(J, c)
    gw_norm = float(torch.linalg.vector_norm(gw))
    zero_in_hull = float(torch.linalg.vector_norm(mgda(J))) <= 1e-9 * max(scale, 1e-300)
    degenerate = scale == 0.0 or gw_norm == 0.0 or (zero_in_hull and val >= -zero_tol * scale**2)
    d = g0.clone() if degenerate else g0 + (cprime / gw_norm) * gw
    if rescale == 0:
        return d
    if rescale == 1:
        return d / (1 + c**2)
    if rescale == 2:
        return d / (1 + c)
    raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")


# --------------------------------------------------------------------------------------------
# IMTL-G
# --------------------------------------------------------------------------------------------


def imtl_g_alpha(J: Tensor) -> Tensor:
    """IMTL-G scaling factors, Liu et al. 2021, "Towards Impartial Multi-task Learning"
    (ICLR 2021), Section 3.2 / Algorithm 1, closed form for the gradient part:

        u_t = g_t / ‖g_t‖,
        D = [g_1 − g_2; …; g_1 − g_T]   ((T−1) × P, one row per difference),
        U = [u_1 − u_2; …; u_1 − u_T]   ((T−1) × P),
        α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹,   α_1 = 1 − Σ_{t≥2} α_t.

    Then g = Σ_t α_t g_t has g · u_1 = g · u_t for every t. Defined only when every g_t is
    nonzero and D Uᵀ is invertible (e.g. linearly independent gradients); raises otherwise.
    T = 1 gives α = [1].
    """
    J = _check(J)
    T = J.shape[0]
    if T == 1:
        return torch.ones(1, dtype=torch.float64)
    norms = torch.linalg.vector_norm(J, dim=1)
    if bool((norms == 0).any()):
        raise ValueError("IMTL-G closed form needs nonzero gradients")
    U_vec = J / norms[:, None]
    D = J[0][None, :] - J[1:]
    U = U_vec[0][None, :] - U_vec[1:]
    DU = D @ U.T
    # Solve α DU = g_1 Uᵀ, i.e. DUᵀ αᵀ = U g_1.
    alpha_rest = torch.linalg.solve(DU.T, U @ J[0])
    alpha = torch.cat([(1 - alpha_rest.sum()).reshape(1), alpha_rest])
    return alpha


def imtl_g(J: Tensor) -> Tensor:
    """IMTL-G combined gradient Σ_t α_t g_t (see :func:`imtl_g_alpha`)."""
    J = _check(J)
    return imtl_g_alpha(J) @ J


def imtl_g_by_definition(J: Tensor, tol: float = 1e-9) -> Tensor | None:
    """IMTL-G straight from its definition (Liu et al. 2021, ICLR, Sec. 3.2): weights α with
    Σ_t α_t = 1 such that g = Σ_t α_t g_t has the same projection k on every unit gradient
    u_t = g_t/‖g_t‖ (zero gradients have no u_t and impose nothing).

    Unknowns (α, k); equations (u_t · g_s)_ts α − k 1 = 0 and 1ᵀα = 1, solved by least squares
    on max-norm-1 data. Returns the minimum-norm α if the system is consistent (residual ≤ tol),
    else ``None`` (no such α exists, e.g. g_3 the midpoint of independent g_1, g_2). Unlike the
    closed form of :func:`imtl_g_alpha` it also covers dependent gradients, where α need not be
    unique (the returned one is the min-norm solution).
    """
    J = _check(J)
    T = J.shape[0]
    top = float(torch.linalg.vector_norm(J, dim=1).max())
    Jn = (J / top).numpy() if top > 0 else J.numpy()
    norms = np.linalg.norm(Jn, axis=1)
    nz = norms > 0
    U = Jn[nz] / norms[nz, None]
    m = int(nz.sum())
    A = np.zeros((m + 1, T + 1))
    A[:m, :T] = U @ Jn.T
    A[:m, T] = -1.0
    A[m, :T] = 1.0
    b = np.zeros(m + 1)
    b[m] = 1.0
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    if np.linalg.norm(A @ sol - b) > tol:
        return None
    return torch.from_numpy(sol[:T])
