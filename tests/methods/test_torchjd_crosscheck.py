"""gradsurg vs. TorchJD (test-only oracle) on the methods both libraries define the same way.

TorchJD's aggregators take the matrix J and return the combined update; gradsurg's methods take
G = J Jᵀ and return weights, so each test compares ``w @ J`` with TorchJD's output.

Tolerances (relative to ‖reference update‖, plus 1e-12·scale for near-zero updates), and why:

* Aligned-MTL, ConFIG, IMTL-G, PCGrad, GradVac — 1e-9: the same closed forms / the same
  sequential algorithm in float64 (eigh vs. eigh, pinv of G_u vs. pinv of U, ...).
* UPGrad / DualProj — both sides solve the same (regularised, ``reg_eps = 1e-4``) QP exactly
  (quadprog's dual active set vs. our Lawson–Hanson): 1e-8. Our default exact problem vs. TorchJD
  with a negligible ``reg_eps = 1e-12`` on invertible G: 1e-7, 1e-4 for mixed scales (the
  regularisation itself moves the answer by up to ~1e-12·κ(G), κ(G) ~ 1e8 there).
* CAGrad — 1e-3: TorchJD solves its convex problem with cvxpy/Clarabel (interior point, default
  tolerances ~1e-8 on the objective); the objective is flat near its minimiser (a norm term), so
  the weights are only accurate to ~sqrt(1e-8): errors up to 1e-4 relative are observed. Ours is
  checked against the paper to 1e-5 in tests/test_methods_textbook.py; a formula difference
  (c, rescale) would be O(1).
* Nash-MTL — 1e-5 where TorchJD converged: it stops its convex-concave iterations once
  ‖Gα − 1/α‖ < 1e-3 (or the iterate moves < 1e-6); converged runs land within ~1e-8 of the exact
  solution. On badly scaled inputs its 20 iterations do not converge (residuals ~0.2 seen); there
  we check that ours is exact instead (see test_nash_mtl).

Not compared: MGDA (TorchJD's is an approximate Frank–Wolfe), methods TorchJD lacks. All matrices
here have full row rank; on degenerate inputs the libraries differ by definition (measured,
TorchJD 0.18.0): IMTL-G on rank-deficient G (TorchJD: pinv(G)·‖g‖ normalised to sum 1; gradsurg:
minimum-norm solution of the equal-projection system, 0 when it is inconsistent — e.g.
g_3 = g_1 + g_2 gives 0 vs. a non-zero TorchJD update; parallel gradients give a different
non-unique α); CAGrad with a zero task gradient (TorchJD returns 0 because its min-norm g_w is 0;
gradsurg returns π_C(g_0), the max-min maximiser closest to the mean gradient g_0, when g_w = 0);
UPGrad/DualProj with TorchJD's default reg_eps = 1e-4 (≤ 1e-3 relative, reproduced by our reg_eps
option).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

torchjd = pytest.importorskip("torchjd", reason="torchjd not installed (test-only oracle)")
agg = pytest.importorskip("torchjd.aggregation")
pytest.importorskip("quadprog", reason="torchjd[quadprog_projector] extra not installed")
pytest.importorskip("cvxpy", reason="torchjd[nash_mtl,cagrad] extras not installed")

from gradsurg.methods.aligned_mtl import aligned_mtl_weights
from gradsurg.methods.cagrad import cagrad_weights
from gradsurg.methods.config import config_weights
from gradsurg.methods.dualproj import dualproj_weights
from gradsurg.methods.gradvac import gradvac_weights
from gradsurg.methods.imtl_g import imtl_g_weights
from gradsurg.methods.nash_mtl import nash_mtl_weights
from gradsurg.methods.pcgrad import pcgrad_weights
from gradsurg.methods.upgrad import upgrad_weights

F64 = torch.float64
TS = [2, 3, 5, 8]
KINDS = ["random", "conflicting", "ill_conditioned", "mixed_scales"]


def make(kind: str, T: int, seed: int = 0) -> torch.Tensor:
    """Random and adversarial (T, P) float64 task-gradient matrices, all of full row rank."""
    P = 6 + 3 * T
    rng = np.random.default_rng(100 * KINDS.index(kind) + 10 * T + seed)
    if kind == "random":
        J = rng.standard_normal((T, P))
    elif kind == "conflicting":
        Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
        J = (np.eye(T) - 1.0 / T) @ Q[:, :T].T + 0.1 * rng.standard_normal((T, P - T)) @ Q[:, T:].T
        J *= rng.uniform(0.5, 2.0, size=(T, 1))
    elif kind == "ill_conditioned":
        # Nearly parallel gradients: condition number of J ~ 1e3.
        J = rng.standard_normal(P)[None, :] + 1e-3 * rng.standard_normal((T, P))
    else:  # mixed_scales: norms spanning 1e-2 … 1e2
        J = rng.standard_normal((T, P)) * 10.0 ** rng.uniform(-2, 2, size=(T, 1))
    return torch.from_numpy(J)


def check(ours: torch.Tensor, ref: torch.Tensor, J: torch.Tensor, rtol: float, msg: str = ""):
    ref = ref.to(F64)
    assert torch.isfinite(ours).all(), msg
    scale = J.shape[0] * float(J.norm(dim=1).max())
    err = float((ours - ref).norm())
    size = float(ref.norm())
    assert err <= rtol * size + 1e-12 * scale, f"{msg}: error {err:.3e}, ‖ref‖ {size:.3e}"


def update(w: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    return w @ J


cases = pytest.mark.parametrize("T", TS)
kinds = pytest.mark.parametrize("kind", KINDS)


@cases
@kinds
def test_upgrad_dualproj_same_regularised_problem(kind, T):
    J = make(kind, T)
    G = J @ J.T
    check(update(upgrad_weights(G, reg_eps=1e-4), J), agg.UPGrad()(J), J, 1e-8, "upgrad")
    check(update(dualproj_weights(G, reg_eps=1e-4), J), agg.DualProj()(J), J, 1e-8, "dualproj")


@cases
@pytest.mark.parametrize("kind", ["random", "conflicting", "mixed_scales"])
def test_upgrad_dualproj_exact(kind, T):
    from torchjd.linalg import QuadprogProjector

    J = make(kind, T)
    G = J @ J.T
    proj = QuadprogProjector(norm_eps=0.0, reg_eps=1e-12)
    # reg_eps·κ(G): κ ~ 1e8 for mixed scales (norms 1e-2 … 1e2).
    rtol = 1e-7 if kind != "mixed_scales" else 1e-4
    check(update(upgrad_weights(G), J), agg.UPGrad(projector=proj)(J), J, rtol, "upgrad")
    check(update(dualproj_weights(G), J), agg.DualProj(projector=proj)(J), J, rtol, "dualproj")


@cases
@kinds
def test_imtl_g(kind, T):
    J = make(kind, T)
    # κ(G) ~ 1e6 for nearly parallel gradients: both sides lose ~κ·eps.
    rtol = 1e-9 if kind != "ill_conditioned" else 1e-6
    check(update(imtl_g_weights(J @ J.T), J), agg.IMTLG()(J), J, rtol, "imtl_g")


@cases
@kinds
@pytest.mark.parametrize("c", [0.4, 1.0])
def test_cagrad(kind, T, c):
    J = make(kind, T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = agg.CAGrad(c=c)(J)
    check(update(cagrad_weights(J @ J.T, c, rescale=0), J), ref, J, 1e-3, "cagrad")


@cases
@kinds
@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
def test_aligned_mtl(kind, T, mode):
    J = make(kind, T)
    ref = agg.AlignedMTL(scale_mode=mode)(J)
    check(update(aligned_mtl_weights(J @ J.T, mode), J), ref, J, 1e-9, "aligned")


@cases
@kinds
def test_config(kind, T):
    J = make(kind, T)
    # pinv of U vs. eigen-pseudo-inverse of U Uᵀ: rounding amplified by κ(U)² (~1e6 ill-cond.).
    rtol = 1e-9 if kind != "ill_conditioned" else 1e-4
    check(update(config_weights(J @ J.T), J), agg.ConFIG()(J), J, rtol, "config")


@cases
@kinds
def test_pcgrad_same_orders(kind, T):
    J = make(kind, T)
    torch.manual_seed(1234)
    order = torch.stack([torch.randperm(T) for _ in range(T)])  # TorchJD: one randperm per task
    torch.manual_seed(1234)
    ref = agg.PCGrad()(J)
    check(update(pcgrad_weights(J @ J.T, order), J), ref, J, 1e-9, "pcgrad")


@cases
@kinds
def test_gradvac_same_orders_and_state(kind, T):
    J0 = make(kind, T)
    beta = 0.3
    ref_agg = agg.GradVac(beta=beta, eps=0.0)
    rho = torch.zeros(T, T, dtype=F64)
    for step in range(3):
        J = J0 + 0.3 * step * make("random", T, seed=step + 1) * float(J0.norm(dim=1).mean())
        torch.manual_seed(99 + step)
        rows = []
        for i in range(T):  # TorchJD: per task, randperm over the other tasks in index order
            others = [j for j in range(T) if j != i]
            perm = torch.randperm(T - 1)
            rows.append([i] + [others[k] for k in perm.tolist()])
        order = torch.tensor(rows, dtype=torch.int64)
        torch.manual_seed(99 + step)
        ref = ref_agg(J)
        w, rho = gradvac_weights(J @ J.T, order, rho, beta)
        check(update(w, J), ref, J, 1e-9, f"gradvac step {step}")


@cases
@pytest.mark.parametrize("kind", ["random", "conflicting", "mixed_scales"])
@pytest.mark.parametrize("max_norm", [0.0, 1.0])
def test_nash_mtl(kind, T, max_norm):
    """Where TorchJD's convex-concave iterations converged (its α solves α_i (Gα)_i = 1 to 1e-6),
    the updates agree; where they did not (badly scaled or strongly conflicting inputs, within
    its ``optim_niter = 20``), ours must solve the equation to 1e-10 and TorchJD's must not:
    the difference is then TorchJD's truncation, documented in gradsurg.methods.nash_mtl."""
    J = make(kind, T)
    G = J @ J.T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref0 = agg.NashMTL(n_tasks=T, max_norm=0.0)(J)
        ref = agg.NashMTL(n_tasks=T, max_norm=max_norm)(J)
    alpha_ref = torch.linalg.lstsq(J.T, ref0.unsqueeze(1)).solution[:, 0]  # J has full row rank
    resid_ref = float((alpha_ref * (G @ alpha_ref) - 1.0).abs().max())
    ours = nash_mtl_weights(G, max_norm=max_norm)
    if resid_ref < 1e-6:
        check(update(ours, J), ref, J, 1e-5, "nash_mtl")
    else:
        exact = nash_mtl_weights(G)
        assert float((exact * (G @ exact) - 1.0).abs().max()) < 1e-10
        assert resid_ref > 1e-6
