"""``gradnorm`` (gradsurg/methods/gradnorm.py): model and weight gradients by hand, the
renormalisation after a step, L(0), argument checks, GradSurgery path."""

from __future__ import annotations

import math

import pytest
import torch
from _models import check_first_step_is_hand_objective

from gradsurg.methods.gradnorm import GradNorm

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}  # float64 leaf losses: only rounding separates the two forms


def _gradnorm_problem(T=3, seed=0):
    """L_t = ½ (a_t·W − b_t)² with W a leaf: ∇_W L_t = (a_t·W − b_t) a_t by hand."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(4, generator=gen, dtype=F64, requires_grad=True)
    A = torch.randn(T, 4, generator=gen, dtype=F64)
    b = torch.randn(T, generator=gen, dtype=F64)
    return W, A, b


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.5])
def test_gradnorm_gradients_by_hand(alpha):
    T = 3
    W, A, b = _gradnorm_problem(T)
    m = GradNorm(num_tasks=T, layer=[W], alpha=alpha)
    w0 = [0.5, 1.0, 1.5]
    with torch.no_grad():
        m.loss_scales.copy_(torch.tensor(w0))
    initial = [3.0, 1.0, 0.5]  # L(0), set as if a first call had seen them
    m.initial_losses = torch.tensor(initial, dtype=F64)
    losses = 0.5 * (A @ W - b) ** 2
    out = m.objective(losses)
    gW, gw = torch.autograd.grad(out, [W, m.loss_scales])
    res = (A @ W - b).detach().tolist()
    L = [0.5 * r * r for r in res]
    # model gradient: Σ w_t ∇L_t with w constant
    expected_W = sum(w0[t] * res[t] * A[t] for t in range(T))
    torch.testing.assert_close(gW, expected_W, **TOL)
    # w gradient: ∂/∂w_t Σ |w_t n_t − mean(w n) r_t^α| with the target constant
    n = [abs(res[t]) * float(A[t].norm()) for t in range(T)]
    G = [w0[t] * n[t] for t in range(T)]
    tilde = [L[t] / initial[t] for t in range(T)]
    r = [x / (sum(tilde) / T) for x in tilde]
    target = [sum(G) / T * r[t] ** alpha for t in range(T)]
    expected_w = torch.tensor([math.copysign(n[t], G[t] - target[t]) for t in range(T)])
    torch.testing.assert_close(gw, expected_w, rtol=1e-6, atol=1e-7)
    assert math.isclose(float(out.detach()), sum(w0[t] * L[t] for t in range(T)), rel_tol=1e-7)
    torch.testing.assert_close(m.last_weights, torch.tensor(w0, dtype=F64))
    assert m.last_gradnorm_loss == pytest.approx(sum(abs(G[t] - target[t]) for t in range(T)), rel=1e-6)


def test_gradnorm_after_step_renormalises():
    W, A, b = _gradnorm_problem(3)
    m = GradNorm(num_tasks=3, layer=W)
    with torch.no_grad():
        m.loss_scales.copy_(torch.tensor([0.2, 1.0, 4.0]))
    m.after_step()
    torch.testing.assert_close(m.loss_scales.detach(), torch.tensor([0.2, 1.0, 4.0]) * 3 / 5.2)
    assert math.isclose(float(m.loss_scales.detach().sum()), 3.0, rel_tol=1e-6)
    # first call records L(0)
    m.objective(0.5 * (A @ W - b) ** 2)
    torch.testing.assert_close(m.initial_losses, (0.5 * (A @ W - b) ** 2).detach())


@pytest.mark.parametrize(
    "make, argname",
    [
        (lambda: GradNorm(layer=[torch.zeros(2, requires_grad=True)]), "num_tasks"),
        (lambda: GradNorm(num_tasks=2), "layer"),
        (lambda: GradNorm(num_tasks=2, layer=[torch.zeros(2)]), "layer"),
        (lambda: GradNorm(num_tasks=2, layer=[torch.zeros(2, requires_grad=True)], alpha=-1), "alpha"),
    ],
)
def test_bad_constructor_arguments(make, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        make()


def test_end_to_end_grad_equals_hand_objective():
    method, opt, ref, hand_L = check_first_step_is_hand_objective(
        "gradnorm", lambda L, net: sum(L)  # w starts at 1
    )
    own = list(method.parameters())
    assert len(own) == 1 and own[0].grad is not None
    assert any(own[0] is q for g in opt.param_groups for q in g["params"])
    # w = 1, L(0) = L: r = 1, so ∂L_grad/∂w_t = sign(n_t − mean n) n_t
    layer = list(ref.trunk[2].parameters())
    n = []
    for t in range(3):
        gs = torch.autograd.grad(hand_L[t], layer, retain_graph=True)
        n.append(math.sqrt(sum(float((g.double() ** 2).sum()) for g in gs)))
    expected = torch.tensor([math.copysign(n[t], n[t] - sum(n) / 3) for t in range(3)])
    torch.testing.assert_close(method.loss_scales.grad, expected, rtol=1e-5, atol=1e-7)
    # after_step renormalised the weights (SGD moved them first)
    assert math.isclose(float(method.loss_scales.detach().sum()), 3.0, rel_tol=1e-6)
