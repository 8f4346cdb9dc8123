"""fairgrad / sdmgrad / db_mtl / graddrop / excess_mtl vs. the textbook versions of
textbook_b.py (explicit per-task vectors J; the library only sees G = J Jᵀ, or J for the matrix
methods).

Tolerances are absolute, proportional to ``scale = T · max_t ‖g_t‖`` (times the method's own
amplification where it has one):

* graddrop — 1e-12·scale: the same element-wise sums in another order.
* excess_mtl — 1e-12·scale: the same closed-form recursions (sums, sqrt, exp); only summation
  order differs.
* db_mtl — 1e-11·scale·max_t(1/L_t)·max_s m_s/min_t m_t: closed form; the weights amplify
  rounding by up to (1/L_t)(max m / m_t).
* fairgrad — 1e-8 relative to the update's norm: both sides solve the same nonlinear system
  with different algorithms (Newton on G vs. scipy's Powell hybrid on J, whose xtol stops at
  ~1e-10..1e-12 relative). The solution is unique (strictly convex potential), so any formula
  error is O(1).
* sdmgrad — 1e-6·scale: the textbook side is SLSQP (iterative, stops at ~1e-8 in w); the
  library side is the exact Wolfe solve; the combined vector is unique (strongly convex in g_w).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

try:  # tests/methods as a rootdir on sys.path, or as a package
    import textbook_b as tb
except ImportError:  # pragma: no cover
    from . import textbook_b as tb

import gradsurg
from gradsurg.methods.db_mtl import db_mtl_weights
from gradsurg.methods.fairgrad import fairgrad_weights
from gradsurg.methods.graddrop import graddrop_combine
from gradsurg.methods.sdmgrad import sdmgrad_weights

F64 = torch.float64
TS = [1, 2, 3, 5, 8]
FAMILIES = ["random", "conflicting", "aligned", "one_zero", "duplicated"]
grid = pytest.mark.parametrize("family", FAMILIES)
tgrid = pytest.mark.parametrize("T", TS)


def make_family(family: str, T: int, extra: int = 0) -> torch.Tensor:
    """A deterministic (T, P) float64 matrix of the named family, P = 12 + 4T."""
    P = 12 + 4 * T
    rng = np.random.default_rng(100 * FAMILIES.index(family) + 10 * T + extra)
    scales = rng.uniform(0.3, 3.0, size=T)
    if family == "random":
        J = rng.standard_normal((T, P))
    elif family == "conflicting":
        # Centred simplex vertices (pairwise dot −1/T) in a random T-dim subspace, plus small
        # noise outside it: pairwise obtuse and linearly independent.
        if T == 1:
            J = rng.standard_normal((1, P))
        else:
            Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
            J = (np.eye(T) - 1.0 / T) @ Q[:, :T].T + 0.05 * rng.standard_normal((T, P - T)) @ Q[:, T:].T
            assert np.all((J @ J.T)[~np.eye(T, dtype=bool)] < 0)
    elif family == "aligned":
        J = np.outer(np.ones(T), rng.standard_normal(P))
    elif family == "one_zero":
        J = rng.standard_normal((T, P))
        J[T // 2] = 0.0
    elif family == "duplicated":
        J = rng.standard_normal((T, P))
        if T >= 2:
            J[T - 1] = J[0]
            scales[T - 1] = scales[0]
    else:
        raise ValueError(family)
    return torch.from_numpy(scales[:, None] * J)


def scale_of(J: torch.Tensor) -> float:
    return J.shape[0] * float(torch.linalg.vector_norm(J, dim=1).max())


def close(actual, expected, atol: float, msg: str = "") -> None:
    actual = torch.as_tensor(actual, dtype=F64)
    expected = torch.as_tensor(expected, dtype=F64)
    assert torch.isfinite(actual).all(), f"non-finite {actual} {msg}"
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol, msg=lambda m: f"{msg}\n{m}")


# --------------------------------------------------------------------------------------------
# Textbook comparisons
# --------------------------------------------------------------------------------------------


@grid
@tgrid
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_vs_textbook(family, T, alpha):
    J = make_family(family, T)
    w = gradsurg.get_method("fairgrad", alpha=alpha).weights(J @ J.T)
    assert w.shape == (T,) and torch.isfinite(w).all() and (w >= 0).all()
    expected = tb.fairgrad(J, alpha)
    close(w @ J, expected, 1e-8 * max(float(np.linalg.norm(expected)), 1e-300), f"{family} T={T} alpha={alpha}")
    live = torch.linalg.vector_norm(J, dim=1) > 0
    assert (w[live] > 0).all() and (w[~live] == 0).all()


@grid
@tgrid
@pytest.mark.parametrize("lamda", [0.0, 0.3, 2.0])
def test_sdmgrad_vs_textbook(family, T, lamda):
    J = make_family(family, T)
    w = gradsurg.get_method("sdmgrad", lamda=lamda).weights(J @ J.T)
    assert torch.isfinite(w).all() and (w >= -1e-15).all()
    assert abs(float(w.sum()) - 1.0) < 1e-12
    close(w @ J, tb.sdmgrad(J, lamda), 1e-6 * scale_of(J), f"{family} T={T} lamda={lamda}")


def _loss_seq(T: int, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.05, 5.0, size=T) for _ in range(steps)]


@grid
@tgrid
@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_db_mtl_vs_textbook(family, T, beta):
    Js = [make_family(family, T, extra=e) for e in range(3)]
    Ls = _loss_seq(T, 3, T)
    method = gradsurg.get_method("db_mtl", beta=beta)
    expected = tb.db_mtl(Js, Ls, beta)
    for step, (J, L, d) in enumerate(zip(Js, Ls, expected)):
        w = method.weights(J @ J.T, losses=torch.from_numpy(L))
        m = method.ema
        live = m > 0
        amp = float((1.0 / L).max()) * (float(m.max() / m[live].min()) if live.any() else 1.0)
        close(w @ J, d, 1e-11 * scale_of(J) * amp, f"{family} T={T} beta={beta} step={step}")


def _chunked_uniforms(seed: int, P: int, chunk: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(min(chunk, P - s), generator=g, dtype=F64) for s in range(0, P, chunk)])


@grid
@tgrid
@pytest.mark.parametrize("leak", [0.0, 0.25])
def test_graddrop_vs_textbook(family, T, leak):
    J = make_family(family, T)
    P = J.shape[1]
    method = gradsurg.get_method("graddrop", leak=leak, seed=5, chunk_size=7)
    out = torch.full((P,), 3.0, dtype=F64)
    method.combine_into(out, J, beta=0.0)
    U = _chunked_uniforms(5, P, 7)
    expected = tb.graddrop(J, U, leak)
    close(out, expected, 1e-12 * scale_of(J), f"{family} T={T}")
    close(graddrop_combine(J, U, leak), expected, 1e-12 * scale_of(J))
    # beta accumulates; the next call continues the generator's stream.
    out2 = out.clone()
    method.combine_into(out2, J, beta=1.0)
    g = torch.Generator().manual_seed(5)
    for s in range(0, P, 7):  # skip the first call's draws
        torch.rand(min(7, P - s), generator=g, dtype=F64)
    U2 = torch.cat([torch.rand(min(7, P - s), generator=g, dtype=F64) for s in range(0, P, 7)])
    close(out2, out + torch.from_numpy(tb.graddrop(J, U2, leak)), 2e-12 * scale_of(J))


@grid
@tgrid
@pytest.mark.parametrize("warmup", [0, 2])
def test_excess_mtl_vs_textbook(family, T, warmup):
    Js = [make_family(family, T, extra=e) for e in range(4)]
    method = gradsurg.get_method("excess_mtl", robust_step_size=0.7, n_warmup_steps=warmup, chunk_size=5)
    expected = tb.excess_mtl(Js, 0.7, warmup)
    for step, (J, d) in enumerate(zip(Js, expected)):
        out = torch.zeros(J.shape[1], dtype=F64)
        method.combine_into(out, J)
        close(out, d, 1e-12 * scale_of(J), f"{family} T={T} step={step}")


@grid
@tgrid
@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_moco_vs_textbook(family, T, rho):
    Js = [make_family(family, T, extra=e) for e in range(4)]
    method = gradsurg.get_method("moco", beta=0.3, gamma=0.05, rho=rho, chunk_size=6)
    # Bisection projection in the textbook: ~1e-15 in λ, so λ's error times ‖Y‖.
    for step, (J, d) in enumerate(zip(Js, tb.moco(Js, 0.3, 0.05, rho))):
        out = torch.zeros(J.shape[1], dtype=F64)
        method.combine_into(out, J)
        close(out, d, 1e-11 * scale_of(J), f"{family} T={T} step={step}")


# --------------------------------------------------------------------------------------------
# Papers' properties of the solutions
# --------------------------------------------------------------------------------------------


@tgrid
def test_fairgrad_solves_its_equation_and_scaling(T):
    J = make_family("random", T)
    G = J @ J.T
    for alpha in (0.5, 1.0, 3.0):
        w = fairgrad_weights(G, alpha)
        torch.testing.assert_close(G @ w, w.pow(-1.0 / alpha), rtol=1e-12, atol=0.0)
        # G → c² G multiplies w by c^(−2α/(1+α)) (module docstring).
        c = 7.0
        torch.testing.assert_close(fairgrad_weights(c * c * G, alpha), w * c ** (-2 * alpha / (1 + alpha)), rtol=1e-10, atol=0.0)


def test_fairgrad_alpha_one_t2_closed_form():
    # Orthogonal g1, g2: (G w)_t = ‖g_t‖² w_t = 1/w_t ⇒ w_t = 1/‖g_t‖ (α = 1).
    J = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=F64)
    torch.testing.assert_close(fairgrad_weights(J @ J.T, 1.0), torch.tensor([1 / 3, 2.0], dtype=F64), rtol=1e-12, atol=0.0)


def test_fairgrad_pareto_stationary_gives_zero():
    # g_2 = −g_1 (and a zero gradient): 0 is in the hull, G w = w^(−1/α) has no solution.
    J = torch.tensor([[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    assert torch.equal(fairgrad_weights(J @ J.T, 1.0), torch.zeros(3, dtype=F64))
    assert torch.equal(fairgrad_weights(torch.zeros(2, 2, dtype=F64), 2.0), torch.zeros(2, dtype=F64))


def test_sdmgrad_limits():
    J = make_family("conflicting", 3)
    G = J @ J.T
    # λ = 0 is MGDA; huge λ tends to the mean.
    torch.testing.assert_close(sdmgrad_weights(G, 0.0), gradsurg.get_method("mgda").weights(G), rtol=0, atol=1e-12)
    torch.testing.assert_close(sdmgrad_weights(G, 1e8), torch.full((3,), 1 / 3, dtype=F64), rtol=0, atol=1e-7)


def test_db_mtl_balances_magnitudes_and_loss_scale():
    J = make_family("random", 3)
    L = torch.tensor([0.5, 2.0, 4.0], dtype=F64)
    w, _ = db_mtl_weights(J @ J.T, L, None, 0.0)
    scaled = w[:, None] * J  # every task's contribution has the largest log-gradient norm
    norms = torch.linalg.vector_norm(scaled, dim=1)
    top = float((torch.linalg.vector_norm(J, dim=1) / L).max())
    torch.testing.assert_close(norms, torch.full((3,), top, dtype=F64), rtol=1e-13, atol=0.0)
    # Multiplying L_t and g_t by c leaves the update unchanged (loss-scale invariance).
    c = torch.tensor([10.0, 0.1, 3.0], dtype=F64)
    w2, _ = db_mtl_weights((c[:, None] * J) @ (c[:, None] * J).T, c * L, None, 0.0)
    torch.testing.assert_close(w2 @ (c[:, None] * J), w @ J, rtol=1e-12, atol=0.0)


# --------------------------------------------------------------------------------------------
# State round trips
# --------------------------------------------------------------------------------------------


def _run(method, J, L):
    if isinstance(method, gradsurg.methods.MatrixMethod):
        out = torch.zeros(J.shape[1], dtype=F64)
        method.combine_into(out, J)
        return out
    return method.weights(J @ J.T, losses=L) @ J


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("db_mtl", {"beta": 0.8}),
        ("graddrop", {"leak": 0.1, "seed": 3}),
        ("excess_mtl", {"n_warmup_steps": 1}),
        ("moco", {"beta": 0.4, "gamma": 0.2}),
    ],
)
def test_state_round_trip(name, kwargs):
    Js = [make_family("random", 3, extra=e) for e in range(5)]
    Ls = [torch.from_numpy(L) for L in _loss_seq(3, 5, 9)]
    a = gradsurg.get_method(name, **kwargs)
    assert a.stateful
    for J, L in zip(Js[:2], Ls[:2]):
        _run(a, J, L)
    state = copy.deepcopy(a.state_dict())
    b = gradsurg.get_method(name, **kwargs)
    b.load_state_dict(state)
    for J, L in zip(Js[2:], Ls[2:]):
        assert torch.equal(_run(a, J, L), _run(b, J, L))
    # reset() starts over: equal to a fresh method.
    a.reset()
    fresh = gradsurg.get_method(name, **kwargs)
    assert torch.equal(_run(a, Js[0], Ls[0]), _run(fresh, Js[0], Ls[0]))


def test_tied_to_num_tasks():
    m = gradsurg.get_method("db_mtl")
    J = make_family("random", 3)
    m.weights(J @ J.T, losses=torch.ones(3, dtype=F64))
    J4 = make_family("random", 5)[:4]
    with pytest.raises(ValueError):
        m.weights(J4 @ J4.T, losses=torch.ones(4, dtype=F64))
    e = gradsurg.get_method("excess_mtl")
    e.combine_into(torch.zeros(J.shape[1], dtype=F64), J)
    with pytest.raises(ValueError):
        e.combine_into(torch.zeros(J4.shape[1], dtype=F64), J4)


# --------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs,arg",
    [
        ("fairgrad", {"alpha": 0.0}, "alpha"),
        ("fairgrad", {"alpha": -1.0}, "alpha"),
        ("fairgrad", {"alpha": float("inf")}, "alpha"),
        ("sdmgrad", {"lamda": -0.1}, "lamda"),
        ("sdmgrad", {"lamda": float("nan")}, "lamda"),
        ("db_mtl", {"beta": 1.0}, "beta"),
        ("db_mtl", {"beta": -0.5}, "beta"),
        ("graddrop", {"leak": 1.5}, "leak"),
        ("graddrop", {"chunk_size": 0}, "chunk_size"),
        ("excess_mtl", {"robust_step_size": 0.0}, "robust_step_size"),
        ("excess_mtl", {"n_warmup_steps": -1}, "n_warmup_steps"),
        ("moco", {"beta": 0.0}, "beta"),
        ("moco", {"gamma": -1.0}, "gamma"),
        ("moco", {"rho": -1.0}, "rho"),
    ],
)
def test_bad_arguments(name, kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}: "):
        gradsurg.get_method(name, **kwargs)


@pytest.mark.parametrize("losses", [[1.0, 0.0, 2.0], [1.0, -1.0, 2.0], [1.0, float("nan"), 2.0]])
def test_db_mtl_bad_losses(losses):
    J = make_family("random", 3)
    with pytest.raises(ValueError, match="^losses: "):
        gradsurg.get_method("db_mtl").weights(J @ J.T, losses=torch.tensor(losses, dtype=F64))
    with pytest.raises(ValueError, match="^losses: "):
        gradsurg.get_method("db_mtl").weights(J @ J.T)


# --------------------------------------------------------------------------------------------
# Hypothesis properties
# --------------------------------------------------------------------------------------------


@st.composite
def jacobians(draw, max_T=5, max_P=12):
    T = draw(st.integers(1, max_T))
    P = draw(st.integers(1, max_P))
    J = draw(hnp.arrays(np.int64, (T, P), elements=st.integers(-20, 20))).astype(np.float64)
    for t in range(1, T):
        kind = draw(st.sampled_from(["keep", "keep", "zero", "dup", "multiple"]))
        if kind == "zero":
            J[t] = 0.0
        elif kind == "dup":
            J[t] = J[draw(st.integers(0, t - 1))]
        elif kind == "multiple":
            J[t] = draw(st.sampled_from([0.5, 2.0, 3.0])) * J[draw(st.integers(0, t - 1))]
    J = J * 10.0 ** draw(st.integers(-6, 6))
    return torch.from_numpy(J)


PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(J=jacobians(), name=st.sampled_from(["fairgrad", "sdmgrad", "db_mtl"]), data=st.data())
def test_gram_methods_finite_and_permutation_equivariant(J, name, data):
    T = J.shape[0]
    L = torch.from_numpy(np.array(data.draw(st.lists(st.floats(0.01, 100.0), min_size=T, max_size=T))))
    G = J @ J.T
    w = gradsurg.get_method(name).weights(G, losses=L)
    assert torch.isfinite(w).all()
    perm = torch.from_numpy(np.array(data.draw(st.permutations(list(range(T))))))
    wp = gradsurg.get_method(name).weights(G[perm][:, perm], losses=L[perm])
    d = w @ J
    # Equivariance of the combined update (weights are not unique for duplicated gradients).
    tol = 1e-7 * (float(torch.linalg.vector_norm(d)) + float(w.abs().max()) * float(torch.linalg.vector_norm(J, dim=1).max())) + 1e-300
    torch.testing.assert_close(wp @ J[perm], d, rtol=0.0, atol=tol)


@PROPS
@given(J=jacobians(max_T=6, max_P=40), seed=st.integers(0, 2**31 - 1), leak=st.sampled_from([0.0, 0.3]))
def test_graddrop_signs_and_bounds(J, seed, leak):
    U = torch.rand(J.shape[1], generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = graddrop_combine(J, U, leak)
    assert torch.isfinite(out).all()
    bound = J.abs().sum(dim=0)
    assert (out.abs() <= bound * (1 + 1e-12)).all()
    total, abs_total = J.sum(0), J.abs().sum(0)
    purity = torch.where(abs_total > 0, 0.5 * (1 + total / torch.where(abs_total > 0, abs_total, 1.0)), 0.5)
    positive = U < purity
    if leak == 0.0:
        assert (out[positive] >= 0).all() and (out[~positive] <= 0).all()
        # Purity 1 (all components ≥ 0) always keeps everything.
        pure = (J >= 0).all(0)
        torch.testing.assert_close(out[pure], total[pure], rtol=1e-12, atol=0.0)
    # Relabelling the tasks does not change the result for the same uniforms.
    perm = torch.randperm(J.shape[0], generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(graddrop_combine(J[perm], U, leak), out, rtol=1e-12, atol=1e-300)
    # Positive scale: scales the output.
    torch.testing.assert_close(graddrop_combine(4.0 * J, U, leak), 4.0 * out, rtol=1e-12, atol=1e-300)


@PROPS
@given(J=jacobians(max_T=4, max_P=10), steps=st.integers(1, 4))
@pytest.mark.parametrize("name", ["excess_mtl", "moco"])
def test_matrix_methods_finite_simplex(J, steps, name):
    m = gradsurg.get_method(name)
    for _ in range(steps):
        out = torch.zeros(J.shape[1], dtype=F64)
        m.combine_into(out, J)
        assert torch.isfinite(out).all()
        w = m.alpha if name == "excess_mtl" else m.lamda
        assert torch.isfinite(w).all() and (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12


# --------------------------------------------------------------------------------------------
# End to end through GradSurgery
# --------------------------------------------------------------------------------------------


class Trunk3(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(5, 1) for _ in range(3))

    def losses(self, x, y):
        h = self.trunk(x)
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() + 0.1 for t, head in enumerate(self.heads)]


def _per_task(model, losses):
    shared = list(model.trunk.parameters())
    rows = []
    for loss in losses:
        gs = torch.autograd.grad(loss, shared, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows)


@pytest.mark.parametrize("name", ["fairgrad", "sdmgrad", "db_mtl", "graddrop", "excess_mtl", "moco"])
def test_end_to_end(name):
    torch.manual_seed(0)
    model = Trunk3().double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=gen, dtype=F64)
    y = torch.randn(8, 3, generator=gen, dtype=F64) * torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    opt = gradsurg.GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name)
    oracle_steps = []  # textbook inputs collected step by step
    for step in range(3):
        losses = model.losses(x, y)
        J = _per_task(model, losses)
        L = np.array([float(l.detach()) for l in losses])
        if name == "graddrop":
            g = torch.Generator()
            g.set_state(opt.method.generator.get_state())
            U = torch.rand(J.shape[1], generator=g, dtype=F64)  # P < chunk_size: one draw
        opt.zero_grad()
        opt.backward(losses)
        got = torch.cat([p.grad.reshape(-1) for p in model.trunk.parameters()])
        oracle_steps.append((J, L))
        if name == "fairgrad":
            expected = tb.fairgrad(J, 1.0)
            atol = 1e-8 * float(np.linalg.norm(expected))
        elif name == "sdmgrad":
            expected, atol = tb.sdmgrad(J, 0.3), 1e-6 * scale_of(J)
        elif name == "db_mtl":
            expected = tb.db_mtl([s[0] for s in oracle_steps], [s[1] for s in oracle_steps], 0.9)[-1]
            atol = 1e-10 * scale_of(J) * float((1 / L).max()) * 10
        elif name == "graddrop":
            expected, atol = tb.graddrop(J, U, 0.0), 1e-12 * scale_of(J)
        elif name == "excess_mtl":
            expected = tb.excess_mtl([s[0] for s in oracle_steps], 1.0, 1)[-1]
            atol = 1e-12 * scale_of(J)
        else:
            expected = tb.moco([s[0] for s in oracle_steps], 0.5, 0.1, 0.0)[-1]
            atol = 1e-11 * scale_of(J)
        close(got, expected, atol, f"{name} step={step}")
        opt.step()
