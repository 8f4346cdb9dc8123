"""UPGrad, DualProj, Aligned-MTL, ConFIG and Nash-MTL (Gram space, gradsurg) vs. the independent
primal textbook versions in ``textbook_qp.py``, plus property tests.

Tolerances are absolute, proportional to ``scale = T · max_i ‖g_i‖`` (a bound on the size of the
combined updates here), with the reason for each:

* UPGrad / DualProj — 1e-8·scale. Both sides are exact (active-set QP on G vs. active-set
  enumeration with orthogonal projections in parameter space). The Gram side solves systems in
  G_PP whose condition number is the square of J_S's, so it loses up to ~κ(J_S)²·eps; for these
  families κ² ≤ ~1e4, giving ≤ 1e-12 — 1e-8 also absorbs the singular (duplicated/dependent)
  cases where the minimum-norm least-squares solve of a rank-deficient G_PP is accurate to
  ~1e-13/1e-13 relative cut-off effects.
* SLSQP cross-check of the enumeration — 1e-6 relative: SLSQP is an iterative solver.
* Aligned-MTL — 1e-9·scale: eigendecomposition of G vs. SVD of J; B multiplies by σ_min/σ_i ≤ 1,
  eigenvectors of clustered eigenvalues only matter through the (exactly representable) span.
* ConFIG — 1e-9·scale·κ², κ = σ_max/σ_min of the unit-gradient matrix: G_u⁺ vs. pinv(U).
* Nash-MTL — 1e-8·‖d‖: both sides converge to residual ≤ 1e-12; the Jacobian of the system is
  G + diag(1/α²) ≻ 0, which for these families has condition ≤ ~1e3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import textbook_qp as tb

import gradsurg
from gradsurg.methods.aligned_mtl import AlignedMTL, aligned_mtl_weights
from gradsurg.methods.config import ConFIG, config_weights
from gradsurg.methods.dualproj import DualProj, dualproj_weights
from gradsurg.methods.nash_mtl import NashMTL, nash_mtl_weights
from gradsurg.methods.upgrad import UPGrad, upgrad_weights

F64 = torch.float64
TS = [1, 2, 3, 5, 8]
FAMILIES = ["random", "conflicting", "aligned", "orthogonal", "one_zero", "duplicated", "dependent"]


def make_family(family: str, T: int) -> np.ndarray:
    """A deterministic (T, P) float64 matrix of task gradients of the named family."""
    P = 10 + 3 * T
    rng = np.random.default_rng(7919 * FAMILIES.index(family) + T)
    scales = rng.uniform(0.3, 3.0, size=T)
    if family == "random":
        J = rng.standard_normal((T, P))
    elif family == "conflicting":
        # Pairwise obtuse: centred simplex vertices in a random T-dim subspace, plus a little
        # noise outside it (so 0 is not in the convex hull and the set is independent).
        Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
        J = (np.eye(T) - 1.0 / T) @ Q[:, :T].T + 0.1 * rng.standard_normal((T, P - T)) @ Q[:, T:].T
        if T == 1:
            J = rng.standard_normal((1, P))
    elif family == "aligned":
        J = np.outer(np.ones(T), rng.standard_normal(P))
    elif family == "orthogonal":
        Q, _ = np.linalg.qr(rng.standard_normal((P, T)))
        J = Q.T.copy()
    elif family == "one_zero":
        J = rng.standard_normal((T, P))
        J[T // 2] = 0.0
    elif family == "duplicated":
        J = rng.standard_normal((T, P))
        scales[-1] = scales[0]
        J[-1] = J[0]
    elif family == "dependent":
        J = scales[:, None] * rng.standard_normal((T, P))
        if T == 2:
            J[1] = -J[0]
        elif T >= 3:
            J[-1] = J[0] + J[1]
        return J
    else:  # pragma: no cover
        raise ValueError(family)
    return scales[:, None] * J


def scale_of(J: np.ndarray) -> float:
    return J.shape[0] * max(float(np.linalg.norm(J, axis=1).max()), 1e-300)


def lib_update(weights_fn, J: np.ndarray, **kw) -> np.ndarray:
    Jt = torch.from_numpy(J)
    w = weights_fn(Jt @ Jt.T, **kw)
    assert w.dtype == F64 and w.shape == (J.shape[0],)
    assert torch.isfinite(w).all(), w
    return (w @ Jt).numpy()


def assert_close(a, b, atol, msg=""):
    assert np.all(np.isfinite(a)), f"non-finite {a} {msg}"
    err = float(np.abs(a - b).max()) if a.size else 0.0
    assert err <= atol, f"{msg}: max error {err:.3e} > {atol:.3e}"


grid = pytest.mark.parametrize("family", FAMILIES)
tgrid = pytest.mark.parametrize("T", TS)


# ---------------------------------------------------------------------------------------------
# The oracles themselves
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [2, 3, 5])
@pytest.mark.parametrize("family", ["random", "conflicting", "one_zero"])
def test_enumeration_agrees_with_slsqp(family, T):
    J = make_family(family, T)
    for g in list(J) + [J.mean(axis=0)]:
        a = tb.project_dual_cone_enum(J, g)
        b = tb.project_dual_cone_slsqp(J, g)
        assert_close(a, b, 1e-6 * max(np.linalg.norm(g), 1.0), f"{family} T={T}")


@pytest.mark.parametrize("T", [16, 40, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_qp_solver_large_t_vs_scipy_nnls(T, seed):
    """The Gram-space Lawson–Hanson solver vs. scipy's NNLS on the explicit factor J
    (min_{z ≥ 0} ‖Jᵀ(u + z)‖), for T up to the supported 64, rank-deficient J, row norms spanning
    1e-3 … 1e3, a zero and a duplicated row. Compared on the projections Jᵀ(u + z) (z itself is
    not unique when G is singular): 1e-9 relative to ‖g‖ — both exact active-set methods; the
    Gram side squares the conditioning (Jacobi-scaled), measured errors are ≤ 1e-12."""
    from scipy.optimize import nnls

    from gradsurg.methods._qp import nonneg_qp

    rng = np.random.default_rng(seed)
    P, r = T + 5, max(2, T // 2)
    J = rng.standard_normal((T, r)) @ rng.standard_normal((r, P))
    J *= 10.0 ** rng.uniform(-3, 3, size=(T, 1))
    J[3] = 0.0
    J[1] = J[0]
    Jt = torch.from_numpy(J)
    G = Jt @ Jt.T
    norms = np.linalg.norm(J, axis=1)
    for k in (0, 2, T - 1):
        u = torch.zeros(T, dtype=F64)
        u[k] = 1.0
        z = nonneg_qp(G, G @ u)
        assert bool((z >= 0).all())
        x = ((u + z) @ Jt).numpy()
        zr, _ = nnls(J.T, -J[k], maxiter=100 * T)
        xr = J.T @ (u.numpy() + zr)
        assert_close(x, xr, 1e-9 * norms[k], f"T={T} k={k}")
        # In the dual cone: every task's cosine with x is ≥ −1e-12.
        live = norms > 0
        if np.linalg.norm(x) > 1e-12 * norms[k]:
            assert np.all((J[live] @ x) / norms[live] >= -1e-12 * np.linalg.norm(x))


# ---------------------------------------------------------------------------------------------
# Library vs textbook
# ---------------------------------------------------------------------------------------------


@grid
@tgrid
def test_upgrad_textbook(family, T):
    J = make_family(family, T)
    assert_close(lib_update(upgrad_weights, J), tb.upgrad(J), 1e-8 * scale_of(J), f"{family} T={T}")


@grid
@tgrid
def test_dualproj_textbook(family, T):
    J = make_family(family, T)
    got = lib_update(dualproj_weights, J)
    assert_close(got, tb.dualproj(J), 1e-8 * scale_of(J), f"{family} T={T}")


@grid
@tgrid
@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
def test_aligned_mtl_textbook(family, T, mode):
    J = make_family(family, T)
    for pref in ("mean", "sum"):
        got = lib_update(aligned_mtl_weights, J, scale_mode=mode, pref=pref)
        ref = tb.aligned_mtl(J, mode, pref)
        assert_close(got, ref, 1e-9 * scale_of(J), f"{family} T={T} {pref}")


@grid
@tgrid
def test_config_textbook(family, T):
    J = make_family(family, T)
    norms = np.linalg.norm(J, axis=1)
    U = J[norms > 0] / norms[norms > 0, None]
    s = np.linalg.svd(U, compute_uv=False) if U.size else np.ones(1)
    s = s[s > 1e-6 * s.max()]
    kappa = float(s.max() / s.min())
    got = lib_update(config_weights, J)
    assert_close(got, tb.config(J), 1e-9 * scale_of(J) * kappa**2, f"{family} T={T}")


@grid
@tgrid
def test_nash_mtl_textbook(family, T):
    J = make_family(family, T)
    got = lib_update(nash_mtl_weights, J)
    ref = tb.nash_mtl(J)
    if ref is None:
        # No direction improves every task (e.g. g_2 = −g_1): no bargaining solution, weights 0.
        assert np.all(got == 0.0)
        return
    alpha, d = ref
    assert_close(got, d, 1e-8 * max(np.linalg.norm(d), 1e-300), f"{family} T={T}")


def test_nash_mtl_solves_the_bargaining_equation_exactly():
    J = torch.from_numpy(make_family("random", 8))
    G = J @ J.T
    a = nash_mtl_weights(G)
    resid = (G @ a - 1.0 / a).abs().max() * a.abs().max()
    assert resid < 1e-12


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------


@st.composite
def jacobians(draw, max_t: int = 6):
    T = draw(st.integers(1, max_t))
    P = draw(st.integers(T, T + 6))
    seed = draw(st.integers(0, 2**31 - 1))
    kinds = ["random", "zero_row", "duplicate", "negated", "low_rank", "all_zero"]
    kind = draw(st.sampled_from(kinds))
    log_scale = draw(st.floats(-6, 6))
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((T, P)) * rng.uniform(0.2, 5.0, size=(T, 1))
    if kind == "zero_row":
        J[rng.integers(T)] = 0.0
    elif kind == "duplicate" and T >= 2:
        J[1] = J[0]
    elif kind == "negated" and T >= 2:
        J[1] = -J[0]
    elif kind == "low_rank" and T >= 3:
        J = rng.standard_normal((T, 2)) @ rng.standard_normal((2, P))
    elif kind == "all_zero":
        J[:] = 0.0
    return J * 10.0**log_scale


SET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL = {
    "upgrad": upgrad_weights,
    "dualproj": dualproj_weights,
    "aligned_mtl": aligned_mtl_weights,
    "config": config_weights,
    "nash_mtl": nash_mtl_weights,
}


@SET
@given(jacobians())
def test_dual_cone_outputs_conflict_with_no_task(J):
    s = float(np.linalg.norm(J, axis=1).max())
    for fn in (upgrad_weights, dualproj_weights):
        d = lib_update(fn, J)
        # Jd ≥ 0 up to rounding in the solve: ~1e-12 relative to ‖g‖·‖d‖ bounds (κ-free since
        # the KKT test is on G itself).
        assert np.all(J @ d >= -1e-10 * s * max(s, np.linalg.norm(d))), (fn.__name__, J @ d)


@SET
@given(jacobians())
def test_config_has_equal_positive_cosines(J):
    d = lib_update(config_weights, J)
    norms = np.linalg.norm(J, axis=1)
    if np.any(norms == 0) or np.linalg.norm(d) == 0:
        return
    U = J / norms[:, None]
    sv = np.linalg.svd(U, compute_uv=False)
    if sv.min() < 1e-3 * sv.max():
        return  # equal cosines are only guaranteed when pinv(U)·1 solves U x = 1 exactly
    cos = (U @ d) / np.linalg.norm(d)
    assert np.all(cos > 0)
    assert np.ptp(cos) <= 1e-9 * (sv.max() / sv.min()) ** 2


@SET
@given(jacobians(), st.floats(1e-3, 1e3), st.randoms(use_true_random=False))
def test_scaling_and_permutation(J, s, rnd):
    T = J.shape[0]
    perm = list(range(T))
    rnd.shuffle(perm)
    for name, fn in ALL.items():
        d = lib_update(fn, J)
        size = max(np.linalg.norm(d), 1e-300)
        # Permutation equivariance (all five methods are symmetric in the tasks).
        # Absolute floor 1e-8·scale: on rank-deficient J an exactly-zero update comes out as
        # rounding noise (seen up to ~5e-10·scale), which is not homogeneous.
        tol = 1e-8 * size + 1e-8 * scale_of(J)
        assert_close(lib_update(fn, J[perm]), d, tol, f"{name} permuted")
        # Common scale s: UPGrad, DualProj, Aligned-MTL, ConFIG are positively homogeneous
        # (d → s·d); Nash-MTL's update is scale invariant (α → α/s, d unchanged).
        expect = d if name == "nash_mtl" else s * d
        tol = 1e-8 * max(np.linalg.norm(expect), 1e-300) + 1e-8 * s * scale_of(J)
        assert_close(lib_update(fn, s * J), expect, tol, f"{name} scaled")


@SET
@given(jacobians(), st.lists(st.floats(0.1, 10.0), min_size=6, max_size=6))
def test_per_task_scale_invariance(J, c):
    """Nash-MTL (paper, Sec. 5: invariant to each task's gradient scale) and ConFIG's direction
    are unchanged when the task gradients are rescaled individually."""
    c = np.asarray(c[: J.shape[0]])
    Jc = c[:, None] * J
    d, dc = lib_update(nash_mtl_weights, J), lib_update(nash_mtl_weights, Jc)
    assert_close(dc, d, 1e-7 * max(np.linalg.norm(d), 1e-300), "nash per-task scale")
    u, uc = lib_update(config_weights, J), lib_update(config_weights, Jc)
    nu, nuc = np.linalg.norm(u), np.linalg.norm(uc)
    if nu > 1e-8 * scale_of(J) and nuc > 1e-8 * scale_of(Jc):
        # d_u depends on the unit vectors only; the length Σ g_iᵀd_u, which can be negative
        # when U x = 1 has no solution (dependent directions), may flip the sign of d.
        sign = 1.0 if float(uc @ u) >= 0 else -1.0
        assert_close(sign * uc / nuc, u / nu, 1e-6, "config direction per-task scale")


@SET
@given(jacobians(max_t=8))
def test_outputs_finite(J):
    for name, fn in ALL.items():
        lib_update(fn, J)  # asserts finiteness


# ---------------------------------------------------------------------------------------------
# Classes: registry, validation, state
# ---------------------------------------------------------------------------------------------


def test_registered():
    names = gradsurg.available_methods() if hasattr(gradsurg, "available_methods") else None
    for name, cls in [("upgrad", UPGrad), ("dualproj", DualProj), ("aligned_mtl", AlignedMTL),
                      ("config", ConFIG), ("nash_mtl", NashMTL)]:
        assert isinstance(gradsurg.get_method(name), cls)
        if names is not None:
            assert name in names


@pytest.mark.parametrize(
    "cls, kwargs, arg",
    [
        (UPGrad, {"reg_eps": -1.0}, "reg_eps"),
        (DualProj, {"reg_eps": -1e-3}, "reg_eps"),
        (AlignedMTL, {"scale_mode": "max"}, "scale_mode"),
        (AlignedMTL, {"pref": "median"}, "pref"),
        (NashMTL, {"max_norm": -1.0}, "max_norm"),
        (NashMTL, {"update_weights_every": 0}, "update_weights_every"),
    ],
)
def test_argument_validation(cls, kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}:"):
        cls(**kwargs)


def test_nash_mtl_state_and_clipping():
    J1 = torch.from_numpy(make_family("random", 3))
    J2 = torch.from_numpy(make_family("conflicting", 3))
    G1, G2 = J1 @ J1.T, J2 @ J2.T
    m = NashMTL(max_norm=0.0, update_weights_every=2)
    w1 = m.weights(G1)
    torch.testing.assert_close(w1, nash_mtl_weights(G1), rtol=0, atol=0)
    sd = m.state_dict()
    w2 = m.weights(G2)  # reused α (no update on the second call)
    torch.testing.assert_close(w2, w1, rtol=0, atol=0)
    m2 = NashMTL(max_norm=0.0, update_weights_every=2)
    m2.load_state_dict(sd)
    torch.testing.assert_close(m2.weights(G2), w1, rtol=0, atol=0)
    torch.testing.assert_close(m.weights(G2), nash_mtl_weights(G2), rtol=0, atol=0)
    with pytest.raises(ValueError):
        m.weights(torch.eye(4, dtype=F64))
    m.reset()
    m.weights(torch.eye(4, dtype=F64))
    clipped = NashMTL(max_norm=0.01).weights(G1)
    assert float(clipped @ G1 @ clipped) ** 0.5 == pytest.approx(0.01, rel=1e-12)


def test_reg_eps_matches_regularised_problem():
    J = torch.from_numpy(make_family("conflicting", 5))
    G = J @ J.T
    exact = upgrad_weights(G) @ J
    reg = UPGrad(reg_eps=1e-4).weights(G) @ J
    assert 0 < float((exact - reg).norm()) < 1e-2 * float(exact.norm()) + 1e-3
