"""Hard inputs for the solvers of moco, mgda, cagrad, config, upgrad, dualproj, nash_mtl, pcgrad
and cosreg: huge and tiny gradients, norms differing by up to 1e30 (Gram diagonals by 1e60 and
more), rank-deficient Gram matrices (T > P, parallel and stationary gradients) and invalid
options.

Every expected value is an exact answer or a textbook definition evaluated on the explicit
vectors, never the code under test:

* exact rational arithmetic (``fractions.Fraction`` on the float64 values, which are exact binary
  fractions) for the simplex projection and MoCo's step, the min-norm point of a convex hull (by
  enumerating its faces), the projection onto the dual cone {x : J x ≥ 0} (by enumerating active
  sets) and PCGrad's sequential projections;
* optimality certificates checked in exact arithmetic where enumeration is too large (MGDA with
  T = 64: Wolfe's optimality conditions), or in float64 on the explicit vectors where the answer
  is irrational (Nash-MTL's equation α_i ⟨g_i, d⟩ = 1, CAGrad's max-min optimality conditions);
* TorchJD's property definitions (tests/unit/aggregation/_asserts.py of TorchJD): non-conflicting
  (‖(J d)₊‖ = ‖J d‖), permutation-invariant, linear under scaling
  (A(diag(αc₁ + βc₂) J) = α A(diag(c₁) J) + β A(diag(c₂) J)), on matrices sampled as TorchJD's
  samplers do (float32, rank-deficient, stationary).

Tolerances are relative and scale-free: errors are measured against Σ_i |w_i|·‖g_i‖ (the size of
the combination, which bounds float64 rounding in forming it) or as cosines with each task.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction as Fr

import pytest
import torch

import gradsurg
from gradsurg.methods._minnorm import min_norm_weights
from gradsurg.methods.cagrad import CAGrad, cagrad_weights
from gradsurg.methods.config import config_weights
from gradsurg.methods.cosreg import CosReg, differentiable_gram
from gradsurg.methods.dualproj import DualProj, dualproj_weights
from gradsurg.methods.moco import MoCo, project_simplex
from gradsurg.methods.nash_mtl import NashMTL, nash_mtl_weights
from gradsurg.methods.pcgrad import pcgrad_weights, random_orders
from gradsurg.methods.upgrad import UPGrad, upgrad_weights

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# Exact (rational) oracles
# ----------------------------------------------------------------------------------------------


def fr_rows(J: torch.Tensor) -> list[list[Fr]]:
    return [[Fr(float(x)) for x in row] for row in J.tolist()]


def dot(a, b) -> Fr:
    return sum((x * y for x, y in zip(a, b)), Fr(0))


def fr_solve(A, b):
    """Exact solution of the square system A x = b, or None if A is singular."""
    n = len(A)
    M = [[*A[i], b[i]] for i in range(n)]
    for c in range(n):
        p = next((r for r in range(c, n) if M[r][c] != 0), None)
        if p is None:
            return None
        M[c], M[p] = M[p], M[c]
        for r in range(n):
            if r != c and M[r][c] != 0:
                f = M[r][c] / M[c][c]
                M[r] = [x - f * y for x, y in zip(M[r], M[c])]
    return [M[i][n] / M[i][i] for i in range(n)]


def fr_independent(rows) -> bool:
    M = [list(r) for r in rows]
    rank = 0
    for c in range(len(M[0]) if M else 0):
        p = next((r for r in range(rank, len(M)) if M[r][c] != 0), None)
        if p is None:
            continue
        M[rank], M[p] = M[p], M[rank]
        for r in range(len(M)):
            if r != rank and M[r][c] != 0:
                f = M[r][c] / M[rank][c]
                M[r] = [x - f * y for x, y in zip(M[r], M[rank])]
        rank += 1
    return rank == len(M)


def exact_simplex_projection(v: list[Fr]) -> list[Fr]:
    """argmin_{x ∈ Δ} ‖x − v‖: the x = max(v − τ, 0) with Σx = 1, τ found exactly by trying
    every support size (Held, Wolfe & Crowder 1974)."""
    srt = sorted(v, reverse=True)
    for k in range(len(v), 0, -1):
        tau = (sum(srt[:k], Fr(0)) - 1) / k
        if srt[k - 1] > tau:
            return [max(x - tau, Fr(0)) for x in v]
    raise AssertionError("unreachable")


def exact_min_norm_point(J: torch.Tensor) -> tuple[list[Fr], list[Fr]]:
    """The min-norm point of conv(rows of J) and its weights, exactly: the point is the min-norm
    point of the affine hull of some affinely independent face, with non-negative weights, that
    satisfies ⟨g_j, x⟩ ≥ ‖x‖² for every j (Wolfe 1976's optimality condition)."""
    g = fr_rows(J)
    T = len(g)
    G = [[dot(a, b) for b in g] for a in g]
    for k in range(1, T + 1):
        for S in itertools.combinations(range(T), k):
            A = [[G[i][j] for j in S] + [Fr(1)] for i in S] + [[Fr(1)] * k + [Fr(0)]]
            sol = fr_solve(A, [Fr(0)] * k + [Fr(1)])
            if sol is None or any(x < 0 for x in sol[:k]):
                continue
            x = [sum((sol[a] * g[i][p] for a, i in enumerate(S)), Fr(0)) for p in range(len(g[0]))]
            nx = dot(x, x)
            if all(dot(g[j], x) >= nx for j in range(T)):
                w = [Fr(0)] * T
                for a, i in enumerate(S):
                    w[i] = sol[a]
                return x, w
    raise AssertionError("no optimal face")


def exact_dual_cone_projection(J: torch.Tensor, g: list[Fr]) -> list[Fr]:
    """argmin ‖x − g‖ over {x : J x ≥ 0}: for the optimal active set S the projection is g minus
    its projection on span(g_i, i ∈ S); among the feasible candidates the nearest to g wins."""
    rows = fr_rows(J)
    T = len(rows)
    best, best_d = None, None
    for k in range(T + 1):
        for S in itertools.combinations(range(T), k):
            A = [rows[i] for i in S]
            if S and not fr_independent(A):
                continue
            x = list(g)
            if S:
                lam = fr_solve([[dot(a, b) for b in A] for a in A], [dot(a, g) for a in A])
                x = [g[p] - sum((lam[q] * A[q][p] for q in range(k)), Fr(0)) for p in range(len(g))]
            if all(dot(r, x) >= 0 for r in rows):
                diff = [a - b for a, b in zip(x, g)]
                dist = dot(diff, diff)
                if best is None or dist < best_d:
                    best, best_d = x, dist
    return best


def exact_pcgrad(J: torch.Tensor, order: list[list[int]]) -> list[Fr]:
    """Yu et al. 2020, Algorithm 1, on the explicit vectors, exactly."""
    g = fr_rows(J)
    total = [Fr(0)] * len(g[0])
    for i in range(len(g)):
        v = list(g[i])
        for j in order[i]:
            if j == i:
                continue
            d, nj = dot(v, g[j]), dot(g[j], g[j])
            if d < 0 and nj > 0:
                v = [a - d / nj * b for a, b in zip(v, g[j])]
        total = [a + b for a, b in zip(total, v)]
    return total


def to_t(v) -> torch.Tensor:
    return torch.tensor([float(x) for x in v], dtype=F64)


# ----------------------------------------------------------------------------------------------
# Matrices
# ----------------------------------------------------------------------------------------------


def scaled_rows(T: int, P: int, seed: int, lo: float, hi: float, fp32: bool = False) -> torch.Tensor:
    """Random unit directions scaled by 10^e, e spread over [lo, hi] in random order (float64;
    ``fp32``: every value representable in float32)."""
    gen = torch.Generator().manual_seed(seed)
    D = torch.randn(T, P, generator=gen, dtype=F64)
    D = D / D.norm(dim=1, keepdim=True)
    e = torch.linspace(lo, hi, T, dtype=F64)[torch.randperm(T, generator=gen)]
    J = D * (10.0**e)[:, None]
    return J.float().double() if fp32 else J


def _orth_complement(Q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    m, k = Q.shape
    A = torch.randn(m, m - k, generator=gen)
    return torch.linalg.qr(A - Q @ (Q.T @ A))[0]


def torchjd_like(kind: str, m: int, n: int, r: int, seed: int) -> torch.Tensor:
    """float32 (m, n) matrices of rank r sampled as TorchJD's test samplers (NormalSampler,
    StrongSampler, StrictlyWeakSampler, NonWeakSampler) do."""
    gen = torch.Generator().manual_seed(seed)
    nrm = torch.nn.functional.normalize
    Vt = _orth_complement(torch.zeros(n, 0), gen)
    S = torch.diag(torch.randn(r, generator=gen).abs())
    if kind == "normal":
        U = _orth_complement(torch.zeros(m, 0), gen)
        return U[:, :r] @ S @ Vt[:r]
    if kind == "strong":  # v > 0 with vᵀA = 0
        v = torch.randn(m, generator=gen).abs()
        U = _orth_complement(nrm(v, dim=0)[:, None], gen)
        return U[:, :r] @ S @ Vt[:r]
    if kind == "weak":  # v ≥ 0 (with zeros) with vᵀA = 0, but no positive one
        u = torch.randn(m, generator=gen).abs()
        split = int(torch.randint(1, m, (), generator=gen))
        perm = torch.randperm(m, generator=gen)
        v, vp = torch.zeros(m), torch.zeros(m)
        v[perm[:split]] = nrm(u[perm[:split]], dim=0)
        vp[perm[split:]] = nrm(u[perm[split:]], dim=0)
        U1 = torch.stack([v, vp]).T
        U = torch.hstack([U1, _orth_complement(U1, gen)])
        return U[:, 1 : r + 1] @ S @ Vt[:r]
    # "nonweak": a positive left singular vector with a positive singular value
    u = torch.randn(m, generator=gen).abs()
    U1 = nrm(u, dim=0)[:, None]
    U = torch.hstack([U1, _orth_complement(U1, gen)])
    return U[:, :r] @ S @ Vt[:r]


def assert_non_conflicting(J: torch.Tensor, d: torch.Tensor, tol: float, msg: str = "") -> None:
    """Every task's cosine with d is ≥ −tol (d = 0 passes)."""
    J, d = J.to(F64), d.to(F64)
    nd = float(d.norm())
    if nd == 0.0:
        return
    n = J.norm(dim=1)
    live = n > 0
    cos = (J[live] @ d) / (n[live] * nd)
    assert float(cos.min()) >= -tol, f"{msg}: min cosine {float(cos.min()):.3e}"


# ----------------------------------------------------------------------------------------------
# 1. MoCo: the simplex projection at huge scales
# ----------------------------------------------------------------------------------------------


def exact_moco(J: torch.Tensor, gamma: float, rho: float, steps: list[torch.Tensor], beta: float):
    """MoCo (Fernando et al. 2023, Alg. 1) in exact arithmetic: y tracks the gradients (y = g at the
    first step), λ ← Π_Δ(λ − γ(YYᵀ + ρI)λ), d = Yᵀλ. Returns the updates."""
    T = J.shape[0]
    y = None
    lam = [Fr(1, T)] * T
    out = []
    for g in steps:
        rows = fr_rows(g)
        if y is None:
            y = rows
        else:
            b = Fr(beta)
            y = [[a - b * (a - c) for a, c in zip(ya, ra)] for ya, ra in zip(y, rows)]
        G = [[dot(a, c) for c in y] for a in y]
        step = [sum((G[i][j] * lam[j] for j in range(T)), Fr(0)) + Fr(rho) * lam[i] for i in range(T)]
        lam = exact_simplex_projection([lam[i] - Fr(gamma) * step[i] for i in range(T)])
        out.append([sum((lam[i] * y[i][p] for i in range(T)), Fr(0)) for p in range(len(y[0]))])
    return out


@pytest.mark.parametrize(
    "rows",
    [
        [[1e9, 0.0], [0.0, 1e9]],  # equal norms: λ stays (½, ½)
        [[1e9, 0.0], [0.0, 2e9]],  # λ → the smaller gradient
        [[3e8, 4e8, 0.0], [0.0, 3e8, 4e8], [4e8, 0.0, 3e8]],  # 1e8.5-ish norms, equal Gram rows
        [[1e19, 0.0, 0.0], [0.0, 1e19, 0.0], [1e18, 0.0, 1e18]],
        [[1e-30, 0.0], [0.0, 2e-30]],  # tiny: the step does nothing, λ stays uniform
    ],
)
def test_moco_huge_and_tiny_gradients_exact(rows):
    # Before: the projection computed 0/0 (NaN) once γ(YYᵀλ) reached ~1e16.
    steps = [torch.tensor(rows, dtype=torch.float32), torch.tensor(rows, dtype=torch.float32) * 0.75]
    method = MoCo(beta=0.5, gamma=0.1)
    expected = exact_moco(steps[0], 0.1, 0.0, steps, 0.5)
    for J, ref in zip(steps, expected):
        out = torch.empty(J.shape[1], dtype=J.dtype)
        method.combine_into(out, J)
        ref = to_t(ref)
        assert torch.isfinite(out).all(), out
        assert float((out.double() - ref).norm()) <= 1e-6 * float(ref.norm()), (out, ref)
        assert abs(float(method.lamda.sum()) - 1.0) <= 1e-15 and bool((method.lamda >= 0).all())


def test_moco_float64_beyond_float32_range():
    # float64 gradients whose squares overflow float64 (1e200² = inf): Y is scaled by a power of
    # two before its Gram matrix is formed.
    J = torch.tensor([[1e200, 0.0, 0.0], [0.0, 1e200, 0.0], [0.0, 0.0, 3e200]], dtype=F64)
    method = MoCo(gamma=0.1)
    out = torch.empty(3, dtype=F64)
    method.combine_into(out, J)
    ref = to_t(exact_moco(J, 0.1, 0.0, [J], 0.5)[0])
    assert torch.isfinite(out).all()
    assert float((out - ref).norm()) <= 1e-15 * float(ref.norm()), (out, ref)  # (½, ½, 0)


@pytest.mark.parametrize("seed", range(6))
def test_project_simplex_matches_exact(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 2 + seed
    scale = 10.0 ** (4 * seed)  # up to 1e20
    v = torch.randn(n, generator=gen, dtype=F64) * scale
    v[: n // 2] = v[0] + torch.rand(n // 2, generator=gen, dtype=F64)  # ties within 1 of the top
    got = project_simplex(v)
    ref = to_t(exact_simplex_projection([Fr(float(x)) for x in v]))
    assert torch.isfinite(got).all()
    assert float((got - ref).abs().max()) <= 4e-16 * max(1.0, float(v.abs().max()) / 2**52), (got, ref)


# ----------------------------------------------------------------------------------------------
# 2. MGDA: Wolfe's algorithm, exact and scale-free
# ----------------------------------------------------------------------------------------------


def test_mgda_small_tasks_cancel_beside_a_large_one():
    # Before: [1, 0, 0], which conflicts with task 2; the exact min-norm point is 0.
    J = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1e7, 0]])
    d = gradsurg.aggregate(J, "mgda", backend="torch")
    assert torch.equal(d, torch.zeros(3)), d


@pytest.mark.parametrize("ratio", [3e6, 1e10, 1e20, 1e30])
def test_mgda_norm_ratios_exact(ratio):
    # Two small tasks cancel up to a small remainder, a large one is oblique to both.
    J = torch.tensor([[1.0, 0.25, 0.0], [-1.0, 0.5, 0.0], [0.3 * ratio, ratio, ratio]], dtype=F64)
    w = min_norm_weights(J @ J.T)
    x, wx = exact_min_norm_point(J)
    x = to_t(x)
    m = float(to_t(wx) @ J.norm(dim=1))
    assert float((w @ J - x).norm()) <= 1e-13 * m, (w, [float(a) for a in wx])


def _general_position(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    T = 3 + seed % 3
    P = 2 + seed % 4
    span = [0.0, 6.0, 15.0, 30.0][seed % 4]
    e = (torch.rand(T, 1, generator=gen, dtype=F64) * 2 - 1) * span
    return torch.randn(T, P, generator=gen, dtype=F64) * 10.0**e


@pytest.mark.parametrize("seed", range(24))
def test_mgda_exact_vs_face_enumeration(seed):
    J = _general_position(seed)
    w = min_norm_weights(J @ J.T)
    assert bool((w >= 0).all()) and abs(float(w.sum()) - 1.0) <= 1e-14
    x, wx = exact_min_norm_point(J)
    m = float(to_t(wx) @ J.norm(dim=1))
    assert float((w @ J - to_t(x)).norm()) <= 1e-12 * m, (seed, w.tolist(), [float(a) for a in wx])


def _wolfe_certificate(J: torch.Tensor, w: torch.Tensor, tol: float) -> None:
    """Wolfe's optimality conditions, exactly on the explicit vectors: with x = Σ w_i g_i,
    ⟨g_j, x⟩ ≥ ‖x‖² for every j, with equality where w_j > 0 (relative to m(‖g_j‖ + m), m =
    Σ w_i ‖g_i‖, the rounding level of any float64 evaluation)."""
    g = fr_rows(J)
    wf = [Fr(float(a)) for a in w]
    total = sum(wf, Fr(0))
    wf = [a / total for a in wf]
    x = [sum((wf[i] * g[i][p] for i in range(len(g))), Fr(0)) for p in range(len(g[0]))]
    nx = dot(x, x)
    norms = J.norm(dim=1)
    m = float(w @ norms)
    for j in range(len(g)):
        gap = float(dot(g[j], x) - nx) / (m * (float(norms[j]) + m))
        assert gap >= -tol, (j, gap)
        if float(w[j]) > 0:
            assert abs(gap) <= tol, (j, gap)


@pytest.mark.parametrize("T,P,span", [(16, 24, 15.0), (64, 72, 15.0), (64, 32, 10.0), (40, 40, 0.0)])
def test_mgda_kkt_certificate_large_t(T, P, span):
    gen = torch.Generator().manual_seed(T + P)
    e = (torch.rand(T, 1, generator=gen, dtype=F64) * 2 - 1) * span
    J = torch.randn(T, P, generator=gen, dtype=F64) * 10.0**e
    w = min_norm_weights(J @ J.T)
    assert bool((w >= 0).all()) and abs(float(w.sum()) - 1.0) <= 1e-14
    _wolfe_certificate(J, w, 1e-12)


# ----------------------------------------------------------------------------------------------
# 3. CAGrad: a maximiser when g_w* = 0, and its options
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1.0, 2.0])
@pytest.mark.parametrize("kind,m,n,r", [("normal", 20, 10, 10), ("normal", 9, 11, 5), ("normal", 4, 3, 3),
                                        ("strong", 20, 10, 5), ("weak", 20, 10, 10), ("weak", 20, 100, 19),
                                        ("nonweak", 20, 10, 5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_cagrad_non_conflicting_for_c_at_least_one(c, kind, m, n, r, seed):
    # TorchJD's test_non_conflicting for CAGrad(c ∈ {1, 2}). Before: on these T = 20 and T > P
    # matrices the dual optimum is at g_w* = 0 and the old d = g0 conflicted with some task.
    J = torchjd_like(kind, m, n, r, seed)
    d = gradsurg.aggregate(J, CAGrad(c=c, rescale=0), backend="torch")
    out = J.double() @ d.double()
    assert float(out.clamp(max=0).norm()) <= 4e-4 * float(out.norm()) + 4e-4, out
    # much tighter than TorchJD's 4e-4: no ⟨g_i, d⟩ below float32 rounding of the combination
    scale = float(J.double().norm(dim=1).max()) * float(J.double().mean(dim=0).norm())
    assert float(out.min()) >= -1e-6 * scale, (kind, c, float(out.min()), scale)


@pytest.mark.parametrize("c", [0.4, 1.0, 2.0])
def test_cagrad_zero_dual_optimum_returns_the_maximiser_closest_to_g0(c):
    # Task 1 has a zero gradient, so g_w = 0 is in the hull and the dual value there is 0, an
    # upper bound of the max-min value max_{‖d−g0‖ ≤ c‖g0‖} min_i ⟨g_i, d⟩ (weak duality). g0
    # conflicts with task 3 (value −0.0133), so it is not a maximiser (before: d = g0). Any
    # feasible d of value 0 is; the one closest to g0 is the projection of g0 onto
    # {x : J x ≥ 0}, computed exactly here.
    J = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.1, 0.0], [-0.8, 0.3, 0.0]], dtype=F64)
    g0 = J.mean(dim=0)
    assert float((J @ g0).min()) < -0.01  # g0 conflicts
    w = cagrad_weights(J @ J.T, c, rescale=0)
    d = w @ J
    mean = [sum((Fr(float(J[i, k])) for i in range(3)), Fr(0)) / 3 for k in range(3)]
    ref = to_t(exact_dual_cone_projection(J, mean))
    assert float((d - ref).norm()) <= 1e-14, (d, ref)
    assert float((d - g0).norm()) <= c * float(g0.norm())  # feasible
    assert float((J @ d).min()) >= -1e-15  # value 0: optimal
    # rescale divides the same d
    torch.testing.assert_close(cagrad_weights(J @ J.T, c, rescale=1) @ J, d / (1 + c * c))


@pytest.mark.parametrize("c", [0.4, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_cagrad_extreme_scales_optimal(c, seed):
    J = scaled_rows(4, 5, seed, -40.0, 40.0)
    w = cagrad_weights(J @ J.T, c, rescale=0)
    assert torch.isfinite(w).all()
    d = w @ J
    g0 = J.mean(dim=0)
    k = w - 0.25  # d = g0 + (c'/‖g_w‖) g_w: w − 1/T ∝ the dual weights
    assert bool((k >= -1e-12 * float(k.abs().max())).all())
    gw = (k / k.sum()) @ J
    # Optimality (KKT of the max-min problem): d − g0 = c‖g0‖ ĝ_w and g_w attains min_i ⟨g_i, d⟩:
    # ⟨g_i − g_w, d⟩ ≥ 0 for all i, = 0 where w_i > 0 (as cosines).
    assert abs(float((d - g0).norm()) / (c * float(g0.norm())) - 1.0) <= 1e-12
    cos_dir = float((d - g0) @ gw) / (float((d - g0).norm()) * float(gw.norm()))
    assert cos_dir >= 1 - 1e-12
    n = J.norm(dim=1)
    slack = ((J @ d) - float(gw @ d)) / (n * float(d.norm()))
    assert float(slack.min()) >= -1e-12, slack
    assert float(slack[k > 1e-12 * float(k.max())].abs().max()) <= 1e-9, slack
    if c >= 1:
        assert_non_conflicting(J, d, 1e-12)


@pytest.mark.parametrize("c", [math.inf, math.nan, -1.0, True, "0.4"])
def test_cagrad_rejects_invalid_c(c):
    # c = inf used to hang the bracketing loop forever.
    with pytest.raises(ValueError, match=r"^c:"):
        CAGrad(c=c)
    with pytest.raises(ValueError, match=r"^c:"):
        cagrad_weights(torch.eye(2, dtype=F64), c)


def test_cagrad_rejects_invalid_rescale():
    with pytest.raises(ValueError, match=r"^rescale:"):
        CAGrad(rescale=3)
    with pytest.raises(ValueError, match=r"^rescale:"):
        cagrad_weights(torch.eye(2, dtype=F64), 0.5, rescale=True)


@pytest.mark.parametrize(
    "make,option",
    [
        (lambda v: UPGrad(reg_eps=v), "reg_eps"),
        (lambda v: DualProj(reg_eps=v), "reg_eps"),
        (lambda v: NashMTL(max_norm=v), "max_norm"),
        (lambda v: MoCo(beta=v), "beta"),
        (lambda v: MoCo(gamma=v), "gamma"),
        (lambda v: MoCo(rho=v), "rho"),
        (lambda v: CosReg(lam=v), "lam"),
        (lambda v: CAGrad(c=v), "c"),
    ],
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_float_options_reject_non_finite(make, option, value):
    with pytest.raises(ValueError, match=rf"^{option}:"):
        make(value)


# ----------------------------------------------------------------------------------------------
# 4. Rank-deficient Gram matrices: ConFIG linear under scaling, UPGrad/DualProj permutation
# ----------------------------------------------------------------------------------------------


def _linear_under_scaling(agg, J: torch.Tensor, gen: torch.Generator, tol: float) -> None:
    for _ in range(5):
        c1 = torch.rand(J.shape[0], generator=gen, dtype=J.dtype)
        c2 = torch.rand(J.shape[0], generator=gen, dtype=J.dtype)
        a = torch.rand((), generator=gen, dtype=J.dtype)
        b = torch.rand((), generator=gen, dtype=J.dtype)
        x = agg(torch.diag(a * c1 + b * c2) @ J)
        expected = a * agg(torch.diag(c1) @ J) + b * agg(torch.diag(c2) @ J)
        torch.testing.assert_close(x, expected, atol=tol, rtol=tol)


def test_config_balanced_parallel_gradients_give_zero():
    # Rank 1, two rows one way and two the other: 1 ⟂ range(U), pinv(U) 1 = 0, so the update is
    # 0 (the textbook formula; TorchJD gives ~1e-11). Before: rounding left ~1e-16 of pinv(U) 1,
    # which was normalised into a full-length update along ±v.
    v = torch.tensor([0.3, -1.2, 0.7], dtype=F64)
    J = torch.tensor([1.0, 2.5, -0.5, -4.0], dtype=F64)[:, None] * v
    assert float(config_weights(J @ J.T).abs().max()) == 0.0
    agg = lambda M: gradsurg.aggregate(M, "config", backend="torch")  # noqa: E731
    _linear_under_scaling(agg, J, torch.Generator().manual_seed(0), 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,m,n,r", [("normal", 4, 3, 1), ("normal", 4, 3, 2), ("normal", 4, 3, 3),
                                        ("strong", 20, 100, 1), ("strong", 20, 10, 5), ("weak", 20, 10, 10)])
def test_config_linear_under_scaling_rank_deficient(dtype, kind, m, n, r):
    gen = torch.Generator().manual_seed(m * n + r)
    for seed in range(4):
        J = torchjd_like(kind, m, n, r, seed).to(dtype)
        agg = lambda M: gradsurg.aggregate(M, "config", backend="torch")  # noqa: E731
        _linear_under_scaling(agg, J, gen, 1e-4)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
@pytest.mark.parametrize("kind,m,n,r", [("weak", 20, 10, 10), ("weak", 20, 10, 5), ("weak", 20, 100, 19),
                                        ("strong", 20, 10, 5), ("nonweak", 20, 10, 5), ("normal", 20, 10, 10)])
def test_dual_cone_methods_on_rank_deficient_float32(method, kind, m, n, r):
    # TorchJD's properties (its tolerances: permutation 5e-7 for UPGrad, non-conflicting 4e-4).
    # Before: the Gram-space solver discarded a near-singular direction whose contribution to the
    # projection is O(1): permutations moved UPGrad by 1e-3, and active sets of nearly dependent
    # columns gave weights ~1e6 that a float32 combination rounded into conflicts.
    J = torchjd_like(kind, m, n, r, seed=3)
    agg = lambda M: gradsurg.aggregate(M, method, backend="torch")  # noqa: E731
    d = agg(J)
    out = J.double() @ d.double()
    assert float(out.clamp(max=0).norm()) <= 4e-4 * float(out.norm()) + 4e-4
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        perm = torch.randperm(m, generator=gen)
        torch.testing.assert_close(agg(J[perm]), d, atol=5e-7, rtol=5e-7)
    if method == "upgrad":
        _linear_under_scaling(agg, J, gen, 6e-2)  # TorchJD's tolerance for UPGrad


@pytest.mark.parametrize("kind,m,n,r", [("weak", 20, 10, 10), ("weak", 20, 10, 5), ("weak", 20, 100, 19),
                                        ("nonweak", 20, 10, 5), ("strong", 20, 10, 5), ("strong", 20, 100, 19)])
@pytest.mark.parametrize("seed", range(4))
def test_dual_cone_methods_strongly_stationary(kind, m, n, r, seed):
    # TorchJD's property: A(J) = 0 only if some w > 0 has wᵀJ = 0 (norm > 5e-3 otherwise, its
    # threshold); and exactly 0 when J is strongly stationary. The float32 "weak" matrices are
    # weakly stationary (v ≥ 0 with zeros, vᵀJ = 0) up to float32 rounding, on the boundary of
    # strong stationarity. Before the ridge in _qp the truncated solver fell on the strongly
    # stationary side of that boundary by rounding (weights 1e-9 from positive) and returned ~1e-10.
    J = torchjd_like(kind, m, n, r, seed)
    for method in ("upgrad", "dualproj"):
        norm = float(gradsurg.aggregate(J, method, backend="torch").norm())
        if kind == "strong":
            assert norm <= 1e-6 * float(J.norm(dim=1).max()), (method, norm)
        else:
            assert norm > 5e-3, (method, norm)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
@pytest.mark.parametrize("seed", range(3))
def test_dual_cone_methods_exact_when_t_exceeds_p(method, seed):
    # T = 5 > P = 3 (rank 3, G singular): the exact projections by active-set enumeration.
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(5, 3, generator=gen, dtype=F64) * torch.tensor([1.0, 1e-3, 1e3, 1.0, 10.0], dtype=F64)[:, None]
    G = J @ J.T
    T = J.shape[0]
    if method == "upgrad":
        projs = [exact_dual_cone_projection(J, fr_rows(J)[i]) for i in range(T)]
        ref = to_t([sum((p[k] for p in projs), Fr(0)) / T for k in range(3)])
        w = upgrad_weights(G)
    else:
        mean = [sum((Fr(float(J[i, k])) for i in range(T)), Fr(0)) / T for k in range(3)]
        ref = to_t(exact_dual_cone_projection(J, mean))
        w = dualproj_weights(G)
    m = float(J.norm(dim=1).max())
    assert float((w @ J - ref).norm()) <= 1e-12 * m, (w @ J, ref)


# ----------------------------------------------------------------------------------------------
# 5. Extreme scales (exact float64 Gram matrices)
# ----------------------------------------------------------------------------------------------


def test_upgrad_tiny_conflicting_task():
    # g2 is 1e25 times smaller than g1 and conflicts with it. Exact answer: the mean of
    # π_C(g1) = (½, ½) and π_C(g2) = (0, 1e-25): (¼, ¼ + 5e-26). Before (with an underflowed
    # Gram): (½, 5e-26), cosine −0.71 with g2.
    J = torch.tensor([[1.0, 0.0], [-1e-25, 1e-25]])
    d = gradsurg.aggregate(J, "upgrad", backend="torch")
    assert_non_conflicting(J, d, 1e-6)
    torch.testing.assert_close(d, torch.tensor([0.25, 0.25 + 5e-26]), atol=0, rtol=1e-6)


EXTREME = [(3, 4, -45.0, 45.0, False), (4, 5, -45.0, 45.0, False), (4, 6, -44.0, 38.0, True),
           (5, 5, -30.0, 30.0, False), (5, 3, -45.0, 45.0, False)]


@pytest.mark.parametrize("T,P,lo,hi,fp32", EXTREME)
@pytest.mark.parametrize("seed", range(3))
def test_extreme_scales_mgda_upgrad_dualproj_exact(T, P, lo, hi, fp32, seed):
    """Gram diagonals spanning up to 1e-90 … 1e90: the exact answers on the explicit vectors."""
    J = scaled_rows(T, P, seed, lo, hi, fp32)
    G = J @ J.T
    rows = fr_rows(J)
    n = J.norm(dim=1)
    # MGDA (non-conflicting: every cosine ≥ 0 up to rounding)
    w = gradsurg.get_method("mgda").weights(G)
    x, wx = exact_min_norm_point(J)
    assert float((w @ J - to_t(x)).norm()) <= 1e-12 * float(to_t(wx) @ n)
    assert_non_conflicting(J, w @ J, 1e-12, "mgda")
    # UPGrad: errors relative to each projection's own scale ‖g_i‖ (they differ by up to 1e90)
    projs = [exact_dual_cone_projection(J, rows[i]) for i in range(T)]
    ref = to_t([sum((p[k] for p in projs), Fr(0)) / T for k in range(P)])
    d = gradsurg.get_method("upgrad").weights(G) @ J
    assert float((d - ref).norm()) <= 1e-12 * float(n.max()) / T
    assert_non_conflicting(J, d, 1e-12, "upgrad")
    for i in range(T):  # each projection separately, relative to its own ‖g_i‖
        u = torch.zeros(T, dtype=F64)
        u[i] = 1.0
        from gradsurg.methods._qp import dual_cone_weights

        pi = dual_cone_weights(G, u) @ J
        assert float((pi - to_t(projs[i])).norm()) <= 1e-12 * float(n[i]), i
    # DualProj
    mean = [sum((rows[i][k] for i in range(T)), Fr(0)) / T for k in range(P)]
    ref = to_t(exact_dual_cone_projection(J, mean))
    d = gradsurg.get_method("dualproj").weights(G) @ J
    assert float((d - ref).norm()) <= 1e-12 * float(n.max()) / T
    assert_non_conflicting(J, d, 1e-12, "dualproj")


@pytest.mark.parametrize("T,P,lo,hi,fp32", EXTREME)
@pytest.mark.parametrize("seed", range(3))
def test_extreme_scales_pcgrad_exact(T, P, lo, hi, fp32, seed):
    J = scaled_rows(T, P, seed, lo, hi, fp32)
    order = random_orders(T, torch.Generator().manual_seed(seed))
    w = pcgrad_weights(J @ J.T, order)
    assert torch.isfinite(w).all()
    ref = to_t(exact_pcgrad(J, order.tolist()))
    n = J.norm(dim=1)
    assert float((w @ J - ref).norm()) <= 1e-13 * float(n.sum())
    # and in every task's own direction, relative to the size of the answer
    assert float(((J @ (w @ J - ref)) / n).abs().max()) <= 1e-13 * float(ref.norm())


@pytest.mark.parametrize("T,P,lo,hi,fp32", [e for e in EXTREME if e[0] <= e[1]])
@pytest.mark.parametrize("seed", range(3))
def test_extreme_scales_nash_mtl_and_config(T, P, lo, hi, fp32, seed):
    J = scaled_rows(T, P, seed, lo, hi, fp32)
    G = J @ J.T
    # Nash-MTL: α_i ⟨g_i, d⟩ = 1 for every task, on the explicit vectors (d = Σ α_j g_j).
    # Before: "0 ∈ conv" was decided against the largest norm, always true here: weights 0.
    alpha = nash_mtl_weights(G)
    assert bool((alpha > 0).all()), alpha
    d = alpha @ J
    assert float((alpha * (J @ d) - 1.0).abs().max()) <= 1e-10
    assert_non_conflicting(J, d, 1e-12, "nash_mtl")
    # ConFIG: the textbook formula on the unit vectors (full row rank: U x = 1 is solvable, so
    # every cosine with d is the same positive number).
    U = J / J.norm(dim=1, keepdim=True)
    du = torch.linalg.lstsq(U @ U.T, torch.ones(T, 1, dtype=F64)).solution[:, 0] @ U
    du = du / du.norm()
    ref = float((J @ du).sum()) * du
    d = config_weights(G) @ J
    assert float((d - ref).norm()) <= 1e-10 * float(ref.norm())
    cos = (J @ d) / (J.norm(dim=1) * d.norm())
    assert float(cos.max() - cos.min()) <= 1e-10 and float(cos.min()) > 0


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "pcgrad", "nash_mtl", "config", "mgda", "cagrad",
                                  "imtl_g", "aligned_mtl"])
@pytest.mark.parametrize("T,P,lo,hi,fp32", EXTREME)
def test_extreme_scales_finite(name, T, P, lo, hi, fp32):
    J = scaled_rows(T, P, 0, lo, hi, fp32)
    w = gradsurg.get_method(name).weights(J @ J.T)
    assert torch.isfinite(w).all() and torch.isfinite(w @ J).all(), w


# ----------------------------------------------------------------------------------------------
# 6. cosreg: its own Gram matrix, exact over the float32 range; sparse shared gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e20, 1e-30, 1.0])
def test_cosreg_gram_exact_over_float32_range(scale):
    # Task gradients with entries ~1e20 (squares overflow float32) or ~1e-30 (squares underflow).
    # Before: the Gram matrix was formed in float32: inf/NaN cosines, or 0.
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, generator=gen))
    a = torch.randn(3, 6, generator=gen)
    x = torch.randn(6, generator=gen)
    losses = torch.stack([scale * (a[t] * w).sum() + (w * w * x).sum() * scale for t in range(3)])
    gram = differentiable_gram(losses, [w])
    rows = torch.stack([scale * a[t] + 2 * scale * w.detach() * x for t in range(3)]).double()
    # float32 gradients, exactly as autograd produced them, then their Gram matrix in float64
    grads = torch.stack([torch.autograd.grad(losses[t], [w], retain_graph=True)[0] for t in range(3)]).double()
    ref = grads @ grads.T
    assert torch.isfinite(gram).all()
    torch.testing.assert_close(gram.detach(), ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(grads, rows, rtol=1e-5, atol=0)  # sanity of the hand gradients
    # The objective and its gradient are finite and equal to those of the same model in float64.
    method = CosReg(lam=0.7)
    obj, _ = method.objective(losses, [w])
    (g32,) = torch.autograd.grad(obj, [w])
    w64 = torch.nn.Parameter(w.detach().double())
    l64 = torch.stack([scale * (a[t].double() * w64).sum() + (w64 * w64 * x.double()).sum() * scale for t in range(3)])
    obj64, _ = CosReg(lam=0.7).objective(l64, [w64])
    (g64,) = torch.autograd.grad(obj64, [w64])
    assert torch.isfinite(obj) and torch.isfinite(g32).all()
    torch.testing.assert_close(obj.double(), obj64, rtol=1e-5, atol=0)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-6 * float(g64.abs().max()))


def test_cosreg_sparse_shared_embedding_raises():
    emb = torch.nn.Embedding(5, 3, sparse=True)  # shared by both tasks
    heads = torch.nn.ModuleList([torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)])
    opt = gradsurg.GradSurgery(torch.optim.SGD([*emb.parameters(), *heads.parameters()], lr=0.1), method="cosreg")
    h = emb(torch.tensor([0, 1, 2]))
    losses = [heads[0](h).pow(2).mean(), heads[1](h).pow(2).mean()]
    opt.zero_grad()
    with pytest.raises(ValueError, match=r"^losses:.*dense gradients.*Embedding\(sparse=False\)"):
        opt.backward(losses)
    # and the function itself
    h = emb(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^losses:"):
        differentiable_gram(torch.stack([heads[0](h).pow(2).mean(), heads[1](h).pow(2).mean()]), [emb.weight])
