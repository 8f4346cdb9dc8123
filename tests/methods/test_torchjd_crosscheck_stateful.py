"""gradsurg vs. TorchJD 0.18 (test-only oracle) on IMTL-L, MoDo, CR-MOGM, COSMOS and PBI.

Loss-space methods (IMTL-L, COSMOS, PBI): the objective's value and its gradient with respect to
the losses at fixed loss vectors, and three SGD steps of the same float64 model (gradsurg through
:class:`GradSurgery`, TorchJD through ``scalarizer(losses).backward()``), parameters compared.
Gram methods (MoDo, CR-MOGM): the weights, or the updates w @ J, over several steps of a changing
matrix (the methods are stateful).

Tolerances, and why:

* COSMOS — 1e-12 relative: the same closed form (the losses here have ‖L‖ ≫ 1e-8, where
  TorchJD's ``cosine_similarity`` clamps nothing).
* PBI — 1e-10 relative: TorchJD's d₂ = √(‖p‖² + 1e-12) moves d₂ by ~1e-12/(2d₂), d₂ = O(1) here.
* IMTL-L — 1e-6 relative: TorchJD evaluates e^{s} in float32 (its scales are float32 and the
  exponential is taken before the product with the float64 losses); gradsurg casts s to the
  losses' dtype first. Same float32 parameters on both sides.
* MoDo — 1e-12·max(1, γ·max|G|) absolute on λ: the same step; the simplex projections differ
  (TorchJD's loop on y, ours sort-based on y − max y) by rounding only.
* CR-MOGM — the base's tolerance (IMTL-G 1e-9, 1e-6 for nearly parallel gradients; UPGrad with
  TorchJD's reg_eps = 1e-4 on both sides 1e-8, see test_torchjd_crosscheck.py); the average is
  exact arithmetic on top.

Where the libraries differ by design (each method module says how), ``test_documented_differences``
measures it: TorchJD's simplex projection at |y| ~ 1e17 (all zeros), PBI's damped distance term
for losses ~1e-7, COSMOS's clamped cosine for ‖L‖ < 1e-8.
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch
from _models import make_net

torchjd = pytest.importorskip("torchjd", reason="torchjd not installed (test-only oracle)")
agg = pytest.importorskip("torchjd.aggregation")
scal = pytest.importorskip("torchjd.scalarization")

import gradsurg
from gradsurg import GradSurgery
from gradsurg.methods.cosmos import COSMOS
from gradsurg.methods.cr_mogm import CRMOGM
from gradsurg.methods.imtl_l import IMTLL
from gradsurg.methods.modo import MoDo
from gradsurg.methods.pbi import PBI

F64 = torch.float64
TS = [2, 3, 5, 8]
KINDS = ["random", "conflicting", "ill_conditioned", "mixed_scales"]


def make(kind: str, T: int, seed: int = 0) -> torch.Tensor:
    """Full-row-rank (T, P) float64 matrices, as in test_torchjd_crosscheck.py."""
    P = 6 + 3 * T
    rng = np.random.default_rng(100 * KINDS.index(kind) + 10 * T + seed)
    if kind == "random":
        J = rng.standard_normal((T, P))
    elif kind == "conflicting":
        Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
        J = (np.eye(T) - 1.0 / T) @ Q[:, :T].T + 0.1 * rng.standard_normal((T, P - T)) @ Q[:, T:].T
        J *= rng.uniform(0.5, 2.0, size=(T, 1))
    elif kind == "ill_conditioned":
        J = rng.standard_normal(P)[None, :] + 1e-3 * rng.standard_normal((T, P))
    else:
        J = rng.standard_normal((T, P)) * 10.0 ** rng.uniform(-2, 2, size=(T, 1))
    return torch.from_numpy(J)


def steps(kind: str, T: int, n: int = 4) -> list[torch.Tensor]:
    """A changing sequence: the base matrix plus a growing random perturbation."""
    J0 = make(kind, T)
    size = float(J0.norm(dim=1).mean())
    return [J0 + 0.3 * k * size * make("random", T, seed=k + 1) for k in range(n)]


def check(ours: torch.Tensor, ref: torch.Tensor, rtol: float, msg: str = "") -> None:
    ref = ref.detach().to(F64)
    assert torch.isfinite(ours).all(), msg
    err, size = float((ours.to(F64) - ref).norm()), float(ref.norm())
    assert err <= rtol * size + 1e-300, f"{msg}: error {err:.3e}, ‖ref‖ {size:.3e}"


# ---------------------------------------------------------------------------------------------
# Loss-space: value and gradient at fixed losses, then three training steps
# ---------------------------------------------------------------------------------------------


def _value_and_grad(fn, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = values.clone().requires_grad_(True)
    out = fn(leaf)
    (g,) = torch.autograd.grad(out, leaf)
    return out.detach(), g


def _train_both(ours, theirs, rtol: float, steps_: int = 3) -> None:
    """``steps_`` SGD steps of the float64 Net: ours through GradSurgery, theirs by backward of
    the TorchJD scalarisation (its parameters, if any, in the same SGD); parameters compared."""
    net, batches = make_net()
    net = net.double()
    net2 = copy.deepcopy(net)
    opt = GradSurgery(torch.optim.SGD(net.parameters(), lr=0.05), method=ours)
    opt2 = torch.optim.SGD([*net2.parameters(), *theirs.parameters()], lr=0.05)
    for k, (x, y) in enumerate(batches[:steps_]):
        opt.zero_grad()
        opt.backward(net.losses(x.double(), y.double()))
        opt.step()
        opt2.zero_grad()
        theirs(torch.stack(net2.losses(x.double(), y.double()))).backward()
        opt2.step()
        for (name, p), q in zip(net.named_parameters(), net2.parameters()):
            check(p.detach(), q.detach(), rtol, f"{type(ours).__name__} step {k} {name}")
    for p, q in zip(ours.parameters(), theirs.parameters()):
        check(p.detach(), q.detach(), rtol, f"{type(ours).__name__} own parameters")


def _loss_vectors(T: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(T)
    return [torch.from_numpy(rng.uniform(0.05, 5.0, T)) for _ in range(3)] + [torch.linspace(1.0, 2.0, T, dtype=F64)]


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0, 8.0])
def test_cosmos_objective(T, lam):
    rng = np.random.default_rng(T)
    for values in _loss_vectors(T):
        pref = torch.from_numpy(rng.dirichlet(np.ones(T)))
        ref_v, ref_g = _value_and_grad(scal.COSMOS(lambda_=lam, weights=pref), values)
        v, g = _value_and_grad(COSMOS(lam=lam, preference=pref).objective, values)
        check(v.reshape(1), ref_v.reshape(1), 1e-12, "cosmos value")
        check(g, ref_g, 1e-12, "cosmos gradient")


def test_cosmos_training():
    pref = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    _train_both(COSMOS(lam=2.0, preference=pref), scal.COSMOS(lambda_=2.0, weights=pref), 1e-12)
    _train_both(COSMOS(lam=1.0), scal.COSMOS(lambda_=1.0, weights=torch.full((3,), 1 / 3, dtype=F64)), 1e-12)


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("theta", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("with_reference", [False, True])
def test_pbi_objective(T, theta, with_reference):
    rng = np.random.default_rng(10 + T)
    for values in _loss_vectors(T):
        pref = torch.from_numpy(rng.dirichlet(np.ones(T)))
        ref_point = torch.from_numpy(rng.uniform(-0.5, 0.05, T)) if with_reference else None
        theirs = scal.PBI(theta=theta, weights=pref, reference=ref_point)
        ours = PBI(theta=theta, preference=pref, ideal=None if ref_point is None else ref_point.tolist())
        ref_v, ref_g = _value_and_grad(theirs, values)
        v, g = _value_and_grad(ours.objective, values)
        check(v.reshape(1), ref_v.reshape(1), 1e-10, "pbi value")
        check(g, ref_g, 1e-10, "pbi gradient")


def test_pbi_training():
    pref = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    _train_both(PBI(theta=5.0, preference=pref), scal.PBI(theta=5.0, weights=pref), 1e-10)
    _train_both(PBI(), scal.PBI(theta=5.0, weights=torch.ones(3, dtype=F64)), 1e-10)


@pytest.mark.parametrize("T", TS)
def test_imtl_l_objective(T):
    ours, theirs = IMTLL(num_tasks=T), scal.IMTLL(T)
    with torch.no_grad():
        s = torch.linspace(-0.7, 0.9, T)
        ours.log_scales.copy_(s)
        theirs.log_scale.copy_(s)
    for values in _loss_vectors(T):
        ref_v, ref_g = _value_and_grad(theirs, values)
        v, g = _value_and_grad(ours.objective, values)
        check(v.reshape(1), ref_v.reshape(1), 1e-6, "imtl_l value")
        check(g, ref_g, 1e-6, "imtl_l gradient")
        ours.zero_grad()
        theirs.zero_grad()
        ours.objective(values).backward()
        theirs(values).backward()
        check(ours.log_scales.grad, theirs.log_scale.grad, 1e-6, "imtl_l scale gradient")


def test_imtl_l_training():
    _train_both(IMTLL(num_tasks=3), scal.IMTLL(3), 1e-6)


# ---------------------------------------------------------------------------------------------
# Gram methods: several steps of a changing matrix
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gamma, rho", [(0.1, 0.1), (0.01, 0.0), (1e-3, 1.0)])
def test_modo(T, kind, gamma, rho):
    ours, theirs = MoDo(gamma=gamma, rho=rho), agg.MoDoWeighting(gamma=gamma, rho=rho)
    for k, J in enumerate(steps(kind, T, n=5)):
        G = J @ J.T
        tol = 1e-12 * max(1.0, gamma * float(G.abs().max()))
        torch.testing.assert_close(ours.weights(G), theirs(G), rtol=0.0, atol=tol, msg=lambda m, k=k: f"step {k}\n{m}")


@pytest.mark.parametrize("T", TS)
def test_modo_cross_batch(T):
    """The paper's G = J₁J₂ᵀ of two batches (not symmetric), given to both directly."""
    ours, theirs = MoDo(gamma=0.05), agg.MoDoWeighting(gamma=0.05)
    for k in range(4):
        J1, J2 = make("random", T, seed=2 * k + 1), make("conflicting", T, seed=2 * k + 2)
        G = J1 @ J2.T
        torch.testing.assert_close(ours.weights(G), theirs(G), rtol=0.0, atol=1e-12 * max(1.0, 0.05 * float(G.abs().max())))


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_cr_mogm(T, kind, alpha):
    bases = [("imtl_g", {}, agg.IMTLGWeighting(), 1e-9 if kind != "ill_conditioned" else 1e-6)]
    if importlib.util.find_spec("quadprog") is not None:  # TorchJD's UPGrad needs its quadprog extra
        bases.append(("upgrad", {"reg_eps": 1e-4}, agg.UPGradWeighting(), 1e-8))
    for name, options, weighting, rtol in bases:
        ours, theirs = CRMOGM(base=name, alpha=alpha, base_options=options), agg.CRMOGMWeighting(weighting, alpha=alpha)
        for k, J in enumerate(steps(kind, T)):
            G = J @ J.T
            check(ours.weights(G) @ J, theirs(G) @ J, rtol, f"cr_mogm({name}) step {k}")


def test_cr_mogm_default_base_is_mgda():
    assert isinstance(gradsurg.get_method("cr_mogm").base, type(gradsurg.get_method("mgda")))


# ---------------------------------------------------------------------------------------------
# Where the libraries differ by design (documented in the method modules), measured
# ---------------------------------------------------------------------------------------------


def test_documented_differences():
    # MoDo: TorchJD's projection loses the simplex's 1 at |y| ≳ 1e16; ours shifts by max(y) first
    from gradsurg.methods.modo import project_onto_simplex

    y = torch.tensor([-1e17, -3e17, -2e17], dtype=F64)
    from torchjd.aggregation._utils.simplex import project_onto_simplex as theirs_projection

    assert torch.equal(theirs_projection(y), torch.zeros(3, dtype=F64))
    assert torch.equal(project_onto_simplex(y), torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    # PBI: TorchJD's √(‖p‖² + 1e-12) damps the distance term for small losses; ours is scale-free
    values = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    ones = torch.ones(3, dtype=F64)
    _, ref_small = _value_and_grad(scal.PBI(theta=5.0, weights=ones), 1e-7 * values)
    _, ours_small = _value_and_grad(PBI().objective, 1e-7 * values)
    _, ours_unit = _value_and_grad(PBI().objective, values)
    torch.testing.assert_close(ours_small, ours_unit, rtol=1e-12, atol=0.0)
    assert float((ref_small - ours_unit).abs().max()) > 1.0
    # COSMOS: TorchJD's cosine clamps each norm at 1e-8; ours is exact for tiny losses
    pref = torch.full((3,), 1 / 3, dtype=F64)
    ref_v, _ = _value_and_grad(scal.COSMOS(lambda_=1.0, weights=pref), 1e-10 * values)
    ours_v, _ = _value_and_grad(COSMOS(lam=1.0).objective, 1e-10 * values)
    exact_cos = float(pref @ values / (pref.norm() * values.norm()))
    assert abs(float(ours_v) - (float(pref @ values) * 1e-10 - exact_cos)) < 1e-15
    assert abs(float(ref_v) - float(ours_v)) > 0.1
