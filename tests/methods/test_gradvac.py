"""``gradvac`` (gradsurg/methods/gradvac.py): the library's Gram-space Gradient Vaccine vs. the
textbook algorithm on explicit vectors, including the evolution of the EMA targets φ̂.

Tolerance 1e-10·scale ×20 (scale = T·max‖g_t‖): as PCGrad (the same sequential algorithm in two
arithmetics), times the amplification of a correction, which multiplies g_j by up to
‖g_i^PC‖/(‖g_j‖√(1−φ̂²)). φ̂ entries are cosines: absolute tolerance 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _assertions import close, requires_solver
from _families import FAMILIES, TS, all_orders, gram, make_family, random_order, scale_of
from textbook.gradvac import gradvac
from textbook.pcgrad import pcgrad

import gradsurg
from gradsurg.methods.gradvac import gradvac_weights

F64 = torch.float64
grid = pytest.mark.parametrize("family", FAMILIES)
tgrid = pytest.mark.parametrize("T", TS)


@tgrid
def test_textbook_gradvac_with_zero_targets_is_pcgrad(T):
    # With φ̂ = 0 the GradVac correction is ‖g‖(−φ)/‖g_j‖ · g_j = −(g·g_j)/‖g_j‖² g_j, applied iff
    # φ < 0: exactly the PCGrad projection (Wang et al. 2021, Sec. 3.2).
    J = make_family("random", T)
    order = random_order(T, 7)
    combined, _ = gradvac(J, order, torch.zeros(T, T, dtype=F64), beta=0.3)
    close(combined, pcgrad(J, order), 1e-12 * scale_of(J))


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
    exp_combined, exp_rho = gradvac(J, order, rho, 0.3)
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
        exp, rho_tb = gradvac(J, order, rho_tb, 0.5)
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
        exp, rho = gradvac(J, order, rho, beta)
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
            for o in all_orders(3):
                exp, new_rho = gradvac(J, o, rho, 0.5)
                if float((out - exp).abs().max()) <= 1e-9 * scale_of(J):
                    nxt.append(new_rho)
        assert nxt, f"no order explains the GradVac output at step {step}"
        # de-duplicate (different orders can give the same state)
        uniq = []
        for r in nxt:
            if not any(torch.allclose(r, u, atol=1e-12, rtol=0) for u in uniq):
                uniq.append(r)
        states = uniq


@pytest.mark.parametrize("s", [1.0, 3.0, 7.0, 0.37, 1e3, 1e-3])
def test_cancelled_gradient_has_no_cosine(s):
    # Regression (issue 10, found by the registry's homogeneity property): task 0 visits task 1
    # (g_1 = −g_0) first, φ = −1 < φ̂ = 0, and the correction cancels g_0^PC exactly, leaving
    # rounding noise. Its "cosine" with g_2 used to enter φ̂_02 as β·(±0.08…0.11, or 0) depending
    # on the common scale s of the gradients; a cancelled vector must count as zero: φ̂_02 = 0.
    J = s * torch.tensor([[1.0, 2.0], [-1.0, -2.0], [3.0, -1.0]], dtype=F64)
    order = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    w, rho = gradvac_weights(gram(J), order, torch.zeros(3, 3, dtype=F64), 0.5)
    assert rho[0, 2] == 0.0 and rho[1, 2] == 0.0
    torch.testing.assert_close(rho[0, 1], torch.tensor(-0.5, dtype=F64), rtol=0, atol=1e-15)
    # g_0^PC = g_1^PC = 0 (mutually cancelled); with φ̂ = 0, g_2 is projected off g_1 as in PCGrad
    # (g_2·g_1 = −s², ‖g_1‖² = 5s²), and not off g_0 (g_2·g_0 = s² > 0)
    close(w @ J, J[2] + 0.2 * J[1], 1e-14 * scale_of(J))


def test_state_is_positively_homogeneous_with_cancellations():
    # Duplicated, opposite and zero rows (a hypothesis counterexample): the second call, which
    # uses the targets of the first, scales with the gradients.
    J = torch.tensor([[0, .1], [.1, .1], [.1, .1], [.1, .1], [.1, .1], [-.1, -.1], [.1, .1], [0, 0]], dtype=F64)
    J2 = J * torch.linspace(0.5, 1.5, 8, dtype=F64)[:, None]
    outs = {}
    for s in (1.0, 3.0, 7.0):
        m = gradsurg.get_method("gradvac", seed=0)
        outs[s] = [m.weights(gram(s * X)) @ (s * X) / s for X in (J, J2)]
    for s in (3.0, 7.0):
        for a, b in zip(outs[s], outs[1.0]):
            close(a, b, 1e-9 * scale_of(J))


@requires_solver("gradvac_weights")
@pytest.mark.parametrize("T,P,ratio", [(2, 3, 0), (4, 6, 0), (16, 200, 0), (64, 200, 0), (20, 10, 0), (16, 200, 15), (6, 4, 30)])
def test_compiled_and_numpy_gradvac_agree(T, P, ratio, monkeypatch):
    # csrc/cpu/surgery.cpp follows gradvac_weights' visits: over a few steps (targets carried
    # from step to step, as the method does) the updates and targets agree to rounding.
    from gradsurg.methods import _compiled
    from gradsurg.methods.pcgrad import random_orders
    gen = torch.Generator().manual_seed(T + P)
    J = torch.randn(T, P, generator=gen, dtype=torch.float64)
    J[: T // 2] *= -0.3
    if T >= 4:
        J[1] = -J[0]
        J[2] = 0.0
    J = 10.0 ** torch.empty(T, dtype=torch.float64).uniform_(-ratio / 2, ratio / 2 + 1e-9, generator=gen)[:, None] * J
    G = J @ J.T
    norms = G.diagonal().clamp(min=0).sqrt()
    rho = rho_ref = torch.zeros(T, T, dtype=torch.float64)
    for _ in range(3):
        order = random_orders(T, gen)
        out, rho = gradvac_weights(G, order, rho, 0.3)
        monkeypatch.setattr(_compiled, "ENABLED", False)
        ref, rho_ref = gradvac_weights(G, order, rho_ref, 0.3)
        monkeypatch.setattr(_compiled, "ENABLED", True)
        diff = out - ref
        assert float((diff @ G @ diff).clamp(min=0).sqrt()) <= 1e-10 * float(ref.abs() @ norms + norms.max())
        torch.testing.assert_close(rho, rho_ref, atol=1e-10, rtol=0)
