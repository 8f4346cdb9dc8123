"""Library methods vs. independent textbook implementations (tests/textbook.py).

The library computes weights from the Gram matrix G = J Jᵀ; the textbook code works on the
explicit per-task vectors J. Each test builds J from a named *family* of gradients, gives the
library G = J @ J.T, and compares ``w @ J`` with the textbook combined gradient.

Tolerances are absolute and proportional to ``scale = T · max_i ‖g_i‖`` (an upper bound on the
size of any combined gradient of these methods, up to the method's own amplification):

* sum / mean — 1e-12·scale: a handful of float64 additions.
* PCGrad / GradVac — 1e-10·scale: the same sequential algorithm in two arithmetics (dot products
  of vectors vs. entries of (C G)); each of the ≤ T² steps loses a few ulps, and branches taken
  differently on a near-tie (dot ≈ 0, φ ≈ φ̂) only change the result by the tiny quantity that
  decided the tie, because both updates are continuous at the switch. GradVac gets a further
  ×20: a correction multiplies g_j by up to ‖g_i^PC‖/(‖g_j‖√(1−φ̂²)), which amplifies rounding.
* MGDA — 1e-10·scale: both sides are exact (active-set / KKT linear algebra); the min-norm
  point is unique and Lipschitz in the data.
* IMTL-G — max(1e-10, 1e3·eps·κ)·scale·max|α|, κ the condition number of D Uᵀ: both sides solve
  the same linear system, whose backward-stable solution is accurate to ~eps·κ.
* CAGrad — 1e-5·scale: the textbook side is an iterative SLSQP solve (the paper's solver), which
  we verify separately against a primal SLSQP solve to ~1e-8; 1e-5 leaves a wide margin for the
  solver while still catching any formula error (those are O(1)).

Families: random, conflicting (pairwise obtuse), aligned (positive multiples of one vector),
orthogonal, one_zero (one zero gradient), duplicated (two identical gradients) and dependent
(g_T = g_1 + g_2, or g_2 = −g_1 for T = 2), for T ∈ {1, 2, 3, 5, 8} and P = 12 + 4T.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

try:  # tests/ as a package or as a rootdir on sys.path
    from tests import textbook as tb
except ImportError:  # pragma: no cover
    import textbook as tb

import gradsurg
from gradsurg.methods.gradvac import gradvac_weights
from gradsurg.methods.pcgrad import pcgrad_weights

F64 = torch.float64
TS = [1, 2, 3, 5, 8]
FAMILIES = [
    "random",
    "conflicting",
    "aligned",
    "orthogonal",
    "one_zero",
    "duplicated",
    "dependent",
]
EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------------
# Gradient families
# --------------------------------------------------------------------------------------------


def _seed(family: str, T: int, extra: int = 0) -> int:
    return 1000 * FAMILIES.index(family) + 10 * T + extra


def _num_params(T: int) -> int:
    return 12 + 4 * T  # 16 … 44


def make_family(family: str, T: int, extra: int = 0) -> torch.Tensor:
    """A (T, P) float64 matrix of per-task gradients of the named family (deterministic)."""
    P = _num_params(T)
    rng = np.random.default_rng(_seed(family, T, extra))
    scales = rng.uniform(0.3, 3.0, size=T)
    if family == "random":
        J = rng.standard_normal((T, P))
    elif family == "conflicting":
        # Pairwise obtuse: centred simplex vertices e_i − 1/T (pairwise dot −1/T) in a random
        # T-dim subspace, positive scales, plus noise orthogonal to that subspace so the set is
        # linearly independent (0 is then not exactly in the convex hull). T=1: a lone vector.
        if T == 1:
            J = rng.standard_normal((1, P))
        else:
            while True:
                Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
                basis, rest = Q[:, :T], Q[:, T:]
                simplex = np.eye(T) - 1.0 / T
                s = rng.uniform(1.0, 2.0, size=T)
                noise = 0.1 * rng.standard_normal((T, P - T)) @ rest.T
                J = (s[:, None] * simplex) @ basis.T + noise
                dots = J @ J.T
                if np.all(dots[~np.eye(T, dtype=bool)] < -1e-3):
                    break
        return torch.from_numpy(J)
    elif family == "aligned":
        v = rng.standard_normal(P)
        J = np.outer(np.ones(T), v)
    elif family == "orthogonal":
        Q, _ = np.linalg.qr(rng.standard_normal((P, T)))
        J = Q.T.copy()
    elif family == "one_zero":
        J = rng.standard_normal((T, P))
        J[T // 2] = 0.0
    elif family == "duplicated":
        J = rng.standard_normal((T, P))
        if T >= 2:
            J[T - 1] = J[0]
        scales[T - 1] = scales[0]  # the row scales below must keep the duplicate identical
    elif family == "dependent":
        # Linearly dependent but pairwise distinct: the last gradient is g_1 + g_2 (T ≥ 3) or
        # −g_1 (T = 2). Scales are applied before the dependency is built.
        J = scales[:, None] * rng.standard_normal((T, P))
        if T == 2:
            J[1] = -J[0]
        elif T >= 3:
            J[T - 1] = J[0] + J[1]
        return torch.from_numpy(J)
    else:
        raise ValueError(family)
    return torch.from_numpy(scales[:, None] * J)


def scale_of(J: torch.Tensor) -> float:
    return J.shape[0] * float(torch.linalg.vector_norm(J, dim=1).max())


def random_order(T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(T, generator=g) for _ in range(T)]).to(torch.int64)


def gram(J: torch.Tensor) -> torch.Tensor:
    return J @ J.T


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float, msg: str = "") -> None:
    assert torch.isfinite(actual).all(), f"non-finite result {actual} {msg}"
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol, msg=lambda m: f"{msg}\n{m}")


def lib_weights(name: str, J: torch.Tensor, **kwargs) -> torch.Tensor:
    m = gradsurg.get_method(name, **kwargs)
    w = m.weights(gram(J))
    assert w.dtype == F64 and w.shape == (J.shape[0],)
    assert torch.isfinite(w).all(), f"{name}: non-finite weights {w}"
    return w


grid = pytest.mark.parametrize("family", FAMILIES)
tgrid = pytest.mark.parametrize("T", TS)


# --------------------------------------------------------------------------------------------
# Sanity of the families and of the textbook oracles themselves
# --------------------------------------------------------------------------------------------


@grid
@tgrid
def test_family_shapes(family, T):
    J = make_family(family, T)
    assert J.shape == (T, _num_params(T)) and J.dtype == F64
    if family == "conflicting" and T >= 2:
        off = gram(J)[~torch.eye(T, dtype=torch.bool)]
        assert (off < 0).all()
    if family == "orthogonal":
        off = gram(J)[~torch.eye(T, dtype=torch.bool)]
        assert off.abs().max() < 1e-12 if T > 1 else True


@tgrid
def test_textbook_gradvac_with_zero_targets_is_pcgrad(T):
    # With φ̂ = 0 the GradVac correction is ‖g‖(−φ)/‖g_j‖ · g_j = −(g·g_j)/‖g_j‖² g_j, applied iff
    # φ < 0: exactly the PCGrad projection (Wang et al. 2021, Sec. 3.2).
    J = make_family("random", T)
    order = random_order(T, 7)
    combined, _ = tb.gradvac(J, order, torch.zeros(T, T, dtype=F64), beta=0.3)
    close(combined, tb.pcgrad(J, order), 1e-12 * scale_of(J))


def _cagrad_primal(J: torch.Tensor, c: float) -> torch.Tensor:
    """CAGrad primal (Liu et al. 2021, eq. 4): max_d min_i g_i·d  s.t. ‖d − g0‖ ≤ c‖g0‖."""
    Jn = J.numpy()
    T, P = Jn.shape
    g0 = Jn.mean(0)
    r = c * np.linalg.norm(g0)
    cons = [
        {
            "type": "ineq",
            "fun": lambda x: Jn @ x[:P] - x[P],
            "jac": lambda x: np.hstack([Jn, -np.ones((T, 1))]),
        },
        {
            "type": "ineq",
            "fun": lambda x: r * r - np.sum((x[:P] - g0) ** 2),
            "jac": lambda x: np.concatenate([-2 * (x[:P] - g0), [0.0]]),
        },
    ]
    x0 = np.concatenate([g0, [(Jn @ g0).min()]])
    res = minimize(
        lambda x: -x[P],
        x0,
        jac=lambda x: np.concatenate([np.zeros(P), [-1.0]]),
        method="SLSQP",
        constraints=cons,
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return torch.from_numpy(res.x[:P])


@pytest.mark.parametrize("family", ["random", "conflicting", "orthogonal"])
@pytest.mark.parametrize("T", [2, 3, 5])
def test_textbook_cagrad_dual_matches_primal(family, T):
    # The dual solution d = g0 + c'/‖g_w‖ g_w must solve the primal problem; two different
    # SLSQP formulations agreeing to 1e-7 is the evidence that the oracle is accurate enough
    # for the 1e-5 tolerance used against the library.
    J = make_family(family, T)
    close(tb.cagrad(J, 0.4, rescale=0), _cagrad_primal(J, 0.4), 1e-7 * scale_of(J))


@grid
@tgrid
def test_textbook_mgda_kkt(family, T):
    J = make_family(family, T)
    w = tb.mgda_weights(J)
    G = gram(J)
    s = scale_of(J) ** 2
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    assert float((G @ w - w @ G @ w).min()) >= -1e-12 * s


@pytest.mark.parametrize("family", ["random", "conflicting", "orthogonal", "dependent"])
@tgrid
def test_textbook_imtl_equal_projection(family, T):
    J = make_family(family, T)
    alpha = tb.imtl_g_alpha(J)
    g = alpha @ J
    u = J / torch.linalg.vector_norm(J, dim=1, keepdim=True)
    proj = u @ g
    assert abs(float(alpha.sum()) - 1) < 1e-12
    assert float(proj.max() - proj.min()) <= 1e-10 * scale_of(J) * float(alpha.abs().max())


# --------------------------------------------------------------------------------------------
# Registry and functional API
# --------------------------------------------------------------------------------------------

NAMES = ["sum", "mean", "pcgrad", "gradvac", "cagrad", "mgda", "imtl_g"]


def test_registry():
    from gradsurg import methods as M

    assert set(NAMES) <= set(gradsurg.available_methods())
    classes = {
        "sum": M.Sum,
        "mean": M.Mean,
        "pcgrad": M.PCGrad,
        "gradvac": M.GradVac,
        "cagrad": M.CAGrad,
        "mgda": M.MGDA,
        "imtl_g": M.IMTLG,
    }
    for name, cls in classes.items():
        assert isinstance(gradsurg.get_method(name), cls), name


@pytest.mark.parametrize("T", [1, 3, 5])
def test_gramian(T):
    J = make_family("random", T)
    close(gradsurg.gramian(J), J @ J.T, 1e-12 * scale_of(J) ** 2)
    assert gradsurg.gramian(J).dtype == F64
    # float32 input still gives a float64 Gram
    assert gradsurg.gramian(J.float()).dtype == F64
    # A list of per-task lists of tensors (e.g. one tensor per parameter) = the flattened rows.
    splits = [3, 5, J.shape[1] - 8]
    per_task = [[p.reshape(-1) for p in torch.split(J[t], splits)] for t in range(T)]
    per_task = [[per_task[t][0], per_task[t][1].reshape(5, 1), per_task[t][2]] for t in range(T)]
    close(gradsurg.gramian(per_task), J @ J.T, 1e-12 * scale_of(J) ** 2)


@pytest.mark.parametrize("name", ["sum", "mean", "cagrad", "mgda", "imtl_g"])
@pytest.mark.parametrize("family", ["random", "conflicting"])
def test_aggregate_matches_weights(name, family):
    J = make_family(family, 5)
    expected = gradsurg.get_method(name).weights(gram(J)) @ J
    close(gradsurg.aggregate(J, name), expected, 1e-10 * scale_of(J), name)
    close(gradsurg.aggregate(J, gradsurg.get_method(name)), expected, 1e-10 * scale_of(J), name)


def test_aggregate_pcgrad_instance_is_textbook_for_two_tasks():
    # With T = 2 each task has a single other task, so the random order is irrelevant.
    J = make_family("conflicting", 2)
    out = gradsurg.aggregate(J, gradsurg.methods.PCGrad(seed=3))
    close(out, tb.pcgrad(J, torch.tensor([[0, 1], [0, 1]])), 1e-10 * scale_of(J))


# --------------------------------------------------------------------------------------------
# Sum / mean
# --------------------------------------------------------------------------------------------


@grid
@tgrid
def test_sum(family, T):
    J = make_family(family, T)
    close(lib_weights("sum", J) @ J, tb.sum_(J), 1e-12 * scale_of(J))


@grid
@tgrid
def test_mean(family, T):
    J = make_family(family, T)
    close(lib_weights("mean", J) @ J, tb.mean(J), 1e-12 * scale_of(J))


# --------------------------------------------------------------------------------------------
# PCGrad
# --------------------------------------------------------------------------------------------


@grid
@tgrid
@pytest.mark.parametrize("order_seed", [0, 1])
def test_pcgrad_pure(family, T, order_seed):
    J = make_family(family, T)
    order = random_order(T, order_seed)
    w = pcgrad_weights(gram(J), order)
    assert torch.isfinite(w).all()
    close(w @ J, tb.pcgrad(J, order), 1e-10 * scale_of(J))


@pytest.mark.parametrize("seed", [0, 1, 123])
@pytest.mark.parametrize("T", [3, 5])
def test_pcgrad_seed_reproducible(seed, T):
    J = make_family("conflicting", T)
    a = gradsurg.methods.PCGrad(seed=seed)
    b = gradsurg.get_method("pcgrad", seed=seed)
    for _ in range(3):  # the same sequence of orders, call after call
        torch.testing.assert_close(a.weights(gram(J)), b.weights(gram(J)), rtol=0, atol=0)


def test_pcgrad_seeds_differ():
    # Not a strict contract, but five seeds all drawing identical orders would mean the seed is
    # ignored. Conflicting T=5 makes the result order dependent.
    J = make_family("conflicting", 5)
    outs = [gradsurg.methods.PCGrad(seed=s).weights(gram(J)) for s in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def _all_orders(T: int):
    """Every assignment of a visiting order (over the other tasks) to each task."""
    per_task = []
    for i in range(T):
        others = [j for j in range(T) if j != i]
        per_task.append([list(p) + [i] for p in itertools.permutations(others)])
    for combo in itertools.product(*per_task):
        yield torch.tensor(combo, dtype=torch.int64)


@pytest.mark.parametrize("family", ["random", "conflicting"])
@pytest.mark.parametrize("T", [2, 3])
def test_pcgrad_method_output_is_some_valid_order(family, T):
    # Whatever order the generator draws, the result must be PCGrad for SOME per-task order.
    J = make_family(family, T)
    candidates = [tb.pcgrad(J, o) for o in _all_orders(T)]
    m = gradsurg.methods.PCGrad(seed=0)
    for _ in range(4):
        out = m.weights(gram(J)) @ J
        err = min(float((out - c).abs().max()) for c in candidates)
        assert err <= 1e-10 * scale_of(J)


# --------------------------------------------------------------------------------------------
# GradVac
# --------------------------------------------------------------------------------------------


def _random_rho(T: int, seed: int, amplitude: float = 0.8) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    rho = rng.uniform(-amplitude, amplitude, size=(T, T))
    np.fill_diagonal(rho, 0.0)
    return torch.from_numpy(rho)


@grid
@tgrid
@pytest.mark.parametrize("rho_kind", ["zero", "random"])
def test_gradvac_pure(family, T, rho_kind):
    J = make_family(family, T)
    order = random_order(T, 11)
    rho = torch.zeros(T, T, dtype=F64) if rho_kind == "zero" else _random_rho(T, 5)
    rho_in = rho.clone()
    w, new_rho = gradvac_weights(gram(J), order, rho, 0.3)
    assert torch.equal(rho, rho_in), "gradvac_weights must not modify its rho argument"
    exp_combined, exp_rho = tb.gradvac(J, order, rho, 0.3)
    assert torch.isfinite(w).all()
    # A correction multiplies g_j by up to ‖g‖/(‖g_j‖√(1−φ̂²)) ≲ 10/0.6: allow that factor.
    close(w @ J, exp_combined, 1e-10 * scale_of(J) * 20, "combined")
    # φ̂ entries are cosines: absolute tolerance.
    off = ~torch.eye(T, dtype=torch.bool)
    close(new_rho[off], exp_rho[off], 1e-10, "rho")


@grid
@pytest.mark.parametrize("T", [2, 3, 5, 8])
def test_gradvac_pure_three_calls(family, T):
    # State evolution: feed each call's new_rho into the next, with a different J and order.
    rho_lib = torch.zeros(T, T, dtype=F64)
    rho_tb = torch.zeros(T, T, dtype=F64)
    off = ~torch.eye(T, dtype=torch.bool)
    for step in range(3):
        J = make_family(family, T, extra=step)
        if family != "one_zero":
            J = J + 0.5 * make_family("random", T, extra=step)  # vary the angles between calls
        order = random_order(T, 100 + step)
        w, rho_lib = gradvac_weights(gram(J), order, rho_lib, 0.5)
        exp, rho_tb = tb.gradvac(J, order, rho_tb, 0.5)
        close(w @ J, exp, 2e-9 * scale_of(J), f"combined at step {step}")
        close(rho_lib[off], rho_tb[off], 1e-10, f"rho at step {step}")


@pytest.mark.parametrize("beta", [0.01, 0.5])
@pytest.mark.parametrize("family", ["random", "conflicting"])
def test_gradvac_method_state_two_tasks(beta, family):
    # T = 2: each task has one other task, so the drawn order cannot matter; the method's
    # internal state must evolve like the textbook φ̂ over consecutive calls.
    m = gradsurg.get_method("gradvac", beta=beta, seed=0)
    rho = torch.zeros(2, 2, dtype=F64)
    order = torch.tensor([[0, 1], [0, 1]])
    for step in range(3):
        J = make_family(family, 2, extra=step)
        exp, rho = tb.gradvac(J, order, rho, beta)
        close(m.weights(gram(J)) @ J, exp, 1e-9 * scale_of(J), f"step {step}")


@pytest.mark.parametrize("family", ["random", "conflicting"])
def test_gradvac_method_state_three_tasks(family):
    # T = 3: the method draws one of 8 order combinations per call. Track every textbook state
    # consistent with the outputs seen so far; at least one must explain all 4 calls.
    m = gradsurg.get_method("gradvac", beta=0.5, seed=1)
    states = [torch.zeros(3, 3, dtype=F64)]
    for step in range(4):
        J = make_family(family, 3, extra=step)
        out = m.weights(gram(J)) @ J
        nxt = []
        for rho in states:
            for o in _all_orders(3):
                exp, new_rho = tb.gradvac(J, o, rho, 0.5)
                if float((out - exp).abs().max()) <= 1e-9 * scale_of(J):
                    nxt.append(new_rho)
        assert nxt, f"no order explains the GradVac output at step {step}"
        # de-duplicate (different orders can give the same state)
        uniq = []
        for r in nxt:
            if not any(torch.allclose(r, u, atol=1e-12, rtol=0) for u in uniq):
                uniq.append(r)
        states = uniq


# --------------------------------------------------------------------------------------------
# CAGrad
# --------------------------------------------------------------------------------------------


@grid
@tgrid
def test_cagrad_default(family, T):
    J = make_family(family, T)
    close(lib_weights("cagrad", J) @ J, tb.cagrad(J, 0.4, 1), 1e-5 * scale_of(J))


@pytest.mark.parametrize("rescale", [0, 1, 2])
@pytest.mark.parametrize("c", [0.2, 0.4, 0.8])
@pytest.mark.parametrize("family", ["random", "conflicting"])
@pytest.mark.parametrize("T", [2, 5])
def test_cagrad_params(rescale, c, family, T):
    J = make_family(family, T, extra=3)
    close(
        lib_weights("cagrad", J, c=c, rescale=rescale) @ J,
        tb.cagrad(J, c, rescale),
        1e-5 * scale_of(J),
    )


# --------------------------------------------------------------------------------------------
# MGDA
# --------------------------------------------------------------------------------------------


@grid
@tgrid
def test_mgda(family, T):
    J = make_family(family, T)
    w = lib_weights("mgda", J)
    s = scale_of(J)
    close(w @ J, tb.mgda(J), 1e-10 * s)
    # weights on the simplex and KKT (Sener & Koltun 2018): (G w)_j ≥ wᵀGw for all j.
    G = gram(J)
    assert float(w.min()) >= -1e-12 and abs(float(w.sum()) - 1) <= 1e-12
    assert float((G @ w - w @ G @ w).min()) >= -1e-12 * s**2


# --------------------------------------------------------------------------------------------
# IMTL-G
# --------------------------------------------------------------------------------------------


def _imtl_tol(J: torch.Tensor) -> float:
    T = J.shape[0]
    if T == 1:
        return 1e-12 * scale_of(J)
    u = J / torch.linalg.vector_norm(J, dim=1, keepdim=True)
    DU = (J[0] - J[1:]) @ (u[0] - u[1:]).T
    kappa = float(torch.linalg.cond(DU))
    alpha = tb.imtl_g_alpha(J)
    return max(1e-10, 1e3 * EPS * kappa) * scale_of(J) * max(1.0, float(alpha.abs().max()))


def _assert_equal_projection(J: torch.Tensor, g: torch.Tensor, w: torch.Tensor) -> None:
    norms = torch.linalg.vector_norm(J, dim=1)
    nz = norms > 0
    proj = (J[nz] @ g) / norms[nz]
    tol = 1e-10 * scale_of(J) * max(1.0, float(w.abs().max()))
    assert float(proj.max() - proj.min()) <= tol, proj


@grid
@tgrid
def test_imtl_g(family, T):
    J = make_family(family, T)
    w = lib_weights("imtl_g", J)
    g = w @ J
    if T == 1:
        # IMTL-G with a single task is the task's own gradient: w = [1]. For a zero gradient
        # the contract's two rules ("T=1 → [1]", "zero gradients get weight 0") disagree on w
        # but not on the update, so only the update (zero) is checked there.
        if float(torch.linalg.vector_norm(J)) > 0:
            torch.testing.assert_close(w, torch.ones(1, dtype=F64), rtol=0, atol=1e-15)
        close(g, J[0], 1e-12 * scale_of(J))
        return
    if float(w.abs().sum()) == 0.0:
        # Contract: zero weights when the normaliser Σ pinv(G)·n vanishes; the update is then 0,
        # which must also be what the definition gives (compared below).
        pass
    else:
        assert abs(float(w.sum()) - 1) <= 1e-10
    _assert_equal_projection(J, g, w)
    if family in ("random", "conflicting", "orthogonal"):
        # Linearly independent, nonzero gradients: the paper's closed form is defined.
        close(g, tb.imtl_g(J), _imtl_tol(J))
    elif family == "dependent":
        # Dependent gradients, yet every g_t ≠ 0 and D Uᵀ is invertible (checked): the paper's
        # closed form is defined and, being the equal-projection condition itself, is what a
        # "pinv version of the same" must reproduce. (T = 2, g_2 = −g_1: α = (½, ½), g = 0.)
        assert float(_imtl_tol(J)) < 1e-4 * scale_of(J), "D Uᵀ unexpectedly ill-conditioned"
        close(g, tb.imtl_g(J), _imtl_tol(J))
    elif family == "one_zero":
        # u_t is undefined for the zero task, so the paper's formula is not defined on the full
        # set and the zero task's α is arbitrary (it multiplies the zero vector). The library's
        # pinv version gives it weight 0, so the rest sums to 1: that is the paper's formula on
        # the nonzero tasks.
        keep = torch.linalg.vector_norm(J, dim=1) > 0
        close(g, tb.imtl_g(J[keep]), _imtl_tol(J[keep]))
    elif family == "duplicated":
        # u_1 − u_T = 0 makes D Uᵀ singular. The combined gradient is still unique: it is the
        # paper's formula on the de-duplicated (independent) set.
        close(g, tb.imtl_g(J[:-1]), _imtl_tol(J[:-1]))
    elif family == "aligned":
        # All u_t are equal: every α with Σα = 1 has equal projections, so only the property
        # (checked above) and Σw = 1 are defined by the paper.
        pass


@pytest.mark.parametrize("T", [3, 5, 8])
def test_cagrad_zero_row_nondegenerate(T):
    # The "one_zero" family above always has its CAGrad dual optimum at g_w* = 0 (d = g0).
    # Here a zero task coexists with a task strongly opposed to the mean, so the optimum is a
    # nonzero g_w* even though 0 is a vertex of the hull: the library must not short-cut to g0.
    rng = np.random.default_rng(77 + T)
    P = _num_params(T)
    v = rng.standard_normal(P)
    J = 0.3 * rng.standard_normal((T, P))
    J[0] = 3.0 * v
    J[1] = -1.0 * v + 0.1 * rng.standard_normal(P)
    J[2] = 0.0
    J = torch.from_numpy(J)
    _, gw, val = tb.cagrad_direction(J, 0.4)
    assert val < -1e-3 * float(torch.linalg.vector_norm(J, dim=1).max()) ** 2  # non-degenerate
    close(lib_weights("cagrad", J) @ J, tb.cagrad(J, 0.4, 1), 1e-5 * scale_of(J))
    close(lib_weights("mgda", J) @ J, torch.zeros(P, dtype=F64), 1e-12 * scale_of(J))


def _zero_inside_hull(T: int) -> torch.Tensor:
    """Random g_1..g_{T−1} and g_T = −Σ s_t g_t (s > 0): 0 is in the relative interior of the
    hull, so the cone of directions from 0 is the whole span and contains −g0."""
    rng = np.random.default_rng(500 + T)
    P = _num_params(T)
    J = rng.standard_normal((T, P))
    J[T - 1] = -(rng.uniform(0.2, 1.0, size=T - 1) @ J[: T - 1])
    return torch.from_numpy(J)


@pytest.mark.parametrize("T", [3, 5, 8])
def test_cagrad_zero_inside_hull(T):
    # With 0 inside the hull and c < 1, g_w = −t·g0 gives objective −t‖g0‖²(1 − c) < 0, so the
    # dual optimum g_w* is NOT 0 and d ≠ g0. (Regression: the library's probe of the root
    # bracket at u = 1e-12·hi is below its min-norm solver's resolution and wrongly concluded
    # "g_w* = 0", returning g0/(1+c²).)
    J = _zero_inside_hull(T)
    _, gw, val = tb.cagrad_direction(J, 0.4)
    assert val < -1e-3 * float(torch.linalg.vector_norm(J, dim=1).max()) ** 2
    close(tb.cagrad(J, 0.4, 0), _cagrad_primal(J, 0.4), 1e-7 * scale_of(J))  # oracle sanity
    close(lib_weights("cagrad", J) @ J, tb.cagrad(J, 0.4, 1), 1e-5 * scale_of(J))


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_cagrad_one_dimensional_regression(perm):
    # g = 2, −3, 3 (P = 1): g0 = 2/3, c' = 0.4·2/3; for g < 0 the dual objective is 0.4·g, so
    # g_w* = −3, d = g0 − c' = 0.4 and the update is 0.4/(1 + 0.16) (rescale = 1) for every
    # labelling of the tasks.
    J = torch.tensor([[2.0], [-3.0], [3.0]], dtype=F64)[list(perm)]
    expected = torch.tensor([0.4 / 1.16], dtype=F64)
    close(tb.cagrad(J, 0.4, 1), expected, 1e-7)
    close(lib_weights("cagrad", J) @ J, expected, 1e-10)


@pytest.mark.parametrize(
    "rows",
    [
        [[0.1], [-0.1], [0.1]],  # u = ±1: equal projections force g = 0
        [[0.1], [0.1], [-0.1], [-0.1]],  # same; here pinv(G)·n is pure rounding noise
        [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]],  # g3 = g1 + g2; paper formula: α = (1, 1, −1)
        [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],  # g3 = −g1; paper formula: α = (½, 0, ½)
    ],
)
@pytest.mark.parametrize("k", [1.0, 3.0, 1e-3])
def test_imtl_g_dependent_regression(rows, k):
    # In every case some α with Σα = 1 has equal projections on all u_t and the resulting
    # update is unique: g = 0 (the projections are all 0). For the 2-D cases D Uᵀ is invertible
    # and the paper's closed form itself gives g = 0. A zero-weight answer (the library's
    # "normaliser ≈ 0" convention) has the same update and is accepted.
    J = k * torch.tensor(rows, dtype=F64)
    defined = tb.imtl_g_by_definition(J)
    assert defined is not None
    close(defined @ J, torch.zeros(J.shape[1], dtype=F64), 1e-12 * scale_of(J))
    if J.shape[1] == 2:
        close(tb.imtl_g(J), torch.zeros(2, dtype=F64), 1e-12 * scale_of(J))
    w = lib_weights("imtl_g", J)
    tol = 1e-10 * scale_of(J) * max(1.0, float(w.abs().sum()))
    close(w @ J, torch.zeros(J.shape[1], dtype=F64), tol)
