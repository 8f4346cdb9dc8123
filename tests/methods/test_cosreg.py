"""cosreg (arXiv:2412.06249): the exact gradient of Σα_t L_t + λ Σ_{i<j} cos(∇L_i, ∇L_j)."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery
from gradsurg.methods.base import LossWeighting
from gradsurg.methods.cosreg import CosReg

F64 = torch.float64


class Model(torch.nn.Module):
    """Shared tanh layer θ, one linear head φ_t per task (the paper's h = Θ(x; θ), y_t = g_t(h; φ_t))."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.trunk = torch.nn.Linear(3, 4).double()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(4, 1).double() for _ in range(num_tasks))

    def losses(self, x, y):
        h = torch.tanh(self.trunk(x))
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


def total_loss_by_hand(model, x, y, lam, alphas):
    """L_total from its definition, with first-order gradients only (for finite differences)."""
    losses = model.losses(x, y)
    shared = list(model.trunk.parameters())
    flat = []
    for loss, alpha in zip(losses, alphas):
        grads = torch.autograd.grad(alpha * loss, shared, retain_graph=True)
        flat.append(torch.cat([g.reshape(-1) for g in grads]))
    cos = 0.0
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            cos = cos + torch.dot(flat[i], flat[j]) / (flat[i].norm() * flat[j].norm())
    return sum(a * loss for a, loss in zip(alphas, losses)) + lam * cos


def finite_difference_gradient(model, x, y, lam, alphas, h=1e-6):
    """Central differences of L_total over every parameter (float64: error ~h² + eps/h ≈ 1e-10)."""
    out = []
    for p in model.parameters():
        g = torch.zeros_like(p)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            up = total_loss_by_hand(model, x, y, lam, alphas).item()
            flat[i] = old - h
            down = total_loss_by_hand(model, x, y, lam, alphas).item()
            flat[i] = old
            g.view(-1)[i] = (up - down) / (2 * h)
        out.append(g)
    return out


@pytest.mark.parametrize("num_tasks,lam,alphas", [(2, 0.5, [1.0, 1.0]), (3, -0.3, [0.5, 2.0, 1.0]), (3, 2.0, [1.0, 1.0, 1.0])])
def test_gradient_matches_finite_differences(num_tasks, lam, alphas):
    torch.manual_seed(num_tasks)
    model = Model(num_tasks)
    x, y = torch.randn(7, 3, dtype=F64), torch.randn(7, num_tasks, dtype=F64)
    expected = finite_difference_gradient(copy.deepcopy(model), x, y, lam, alphas)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=CosReg(lam=lam), task_weights=alphas)
    stats = opt.backward(model.losses(x, y))
    assert stats.gram is not None and stats.gram.shape == (num_tasks, num_tasks)
    for p, g in zip(model.parameters(), expected):
        # Central differences in float64 with h = 1e-6: truncation ~1e-12, cancellation ~1e-10.
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-8)


def test_objective_passes_gradcheck():
    torch.manual_seed(0)
    model = Model(3)
    x, y = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    method = CosReg(lam=0.7)
    names = [n for n, _ in model.named_parameters()]
    values = [p.detach().clone().requires_grad_(True) for p in model.parameters()]

    def objective(*params):
        state = dict(zip(names, params))
        h = torch.tanh(torch.nn.functional.linear(x, state["trunk.weight"], state["trunk.bias"]))
        losses = torch.stack([
            (
                (torch.nn.functional.linear(h, state[f"heads.{t}.weight"], state[f"heads.{t}.bias"]).squeeze(-1) - y[:, t])
                ** 2
            ).mean()
            for t in range(3)
        ])
        return method.objective(losses, [state["trunk.weight"], state["trunk.bias"]])[0]

    assert torch.autograd.gradcheck(objective, tuple(values), eps=1e-6, atol=1e-7)


def test_lambda_zero_is_the_plain_sum():
    torch.manual_seed(1)
    model = Model(3)
    twin = copy.deepcopy(model)
    x, y = torch.randn(6, 3, dtype=F64), torch.randn(6, 3, dtype=F64)
    GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=CosReg(lam=0.0)).backward(model.losses(x, y))
    sum(twin.losses(x, y)).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


class FixedWeights(LossWeighting):
    """A loss-space weighting with constant weights, standing in for a dynamic one."""

    name = ""

    def __init__(self, weights):
        super().__init__()
        self.fixed = torch.tensor(weights, dtype=F64)

    def loss_weights(self, losses):
        return self.fixed


def test_dynamic_weighting_replaces_static_alphas():
    torch.manual_seed(2)
    model = Model(3)
    twin = copy.deepcopy(model)
    x, y = torch.randn(6, 3, dtype=F64), torch.randn(6, 3, dtype=F64)
    dynamic = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1),
                          method=CosReg(lam=0.4, weighting=FixedWeights([0.5, 2.0, 1.0])))
    stats = dynamic.backward(model.losses(x, y))
    static = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method=CosReg(lam=0.4), task_weights=[0.5, 2.0, 1.0])
    static.backward(twin.losses(x, y))
    # cos(∇(α_i L_i), ∇(α_j L_j)) = cos(∇L_i, ∇L_j) for α > 0, so both objectives coincide.
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(stats.weights, torch.tensor([0.5, 2.0, 1.0], dtype=F64))


def test_zero_gradient_task_has_zero_cosine_and_finite_gradient():
    model = Model(2)
    x, y = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    losses = model.losses(x, y)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=CosReg(lam=1.0))
    stats = opt.backward([losses[0], 0.0 * losses[1]])
    assert stats.cosine[0, 1] == 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"lam: must be finite"):
        CosReg(lam=float("nan"))
    with pytest.raises(ValueError, match=r"weighting: expected a loss-space method"):
        CosReg(weighting=gradsurg.get_method("pcgrad"))
    with pytest.raises(ValueError, match=r"method: unknown method 'nope'"):
        CosReg(weighting="nope")
