"""Tiny multi-task models and step drivers for the method tests that go through GradSurgery."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

import gradsurg
from gradsurg import GradSurgery

F64 = torch.float64

# --------------------------------------------------------------------------------------------
# Three regression tasks on a float64 trunk: J straight from autograd, for the gradient methods
# --------------------------------------------------------------------------------------------


class Trunk3(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(5, 1) for _ in range(3))

    def losses(self, x, y):
        h = self.trunk(x)
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() + 0.1 for t, head in enumerate(self.heads)]


def per_task(model: Trunk3, losses) -> torch.Tensor:
    """The (T, P) matrix of the task gradients of the trunk parameters, by plain autograd."""
    shared = list(model.trunk.parameters())
    rows = []
    for loss in losses:
        gs = torch.autograd.grad(loss, shared, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows)


def check_end_to_end(name: str, expected, steps: int = 3) -> None:
    """Three SGD steps of ``GradSurgery(method=name)`` on :class:`Trunk3`; before each backward,
    ``expected(Js, Ls, method)`` (the task-gradient matrices and losses of the steps so far, this
    one last) returns ``(expected trunk gradient, atol)``, compared with the trunk's ``.grad``."""
    torch.manual_seed(0)
    model = Trunk3().double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=gen, dtype=F64)
    y = torch.randn(8, 3, generator=gen, dtype=F64) * torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name)
    Js, Ls = [], []
    for step in range(steps):
        losses = model.losses(x, y)
        Js.append(per_task(model, losses))
        Ls.append(np.array([float(v.detach()) for v in losses]))
        want, atol = expected(Js, Ls, opt.method)
        opt.zero_grad()
        opt.backward(losses)
        got = torch.cat([p.grad.reshape(-1) for p in model.trunk.parameters()])
        assert torch.isfinite(got).all(), f"{name} step={step}: non-finite {got}"
        torch.testing.assert_close(got, torch.as_tensor(want, dtype=F64), rtol=0.0, atol=atol,
                                   msg=lambda m, step=step: f"{name} step={step}\n{m}")
        opt.step()


# --------------------------------------------------------------------------------------------
# Loss-space methods: gradients with respect to the losses, and a three-task net
# --------------------------------------------------------------------------------------------


def grad_wrt_losses(method, values):
    """``(objective, ∂objective/∂L)`` at float64 leaf losses; checks ``last_weights`` is that gradient."""
    leaf = torch.tensor(values, dtype=F64, requires_grad=True)
    out = method.objective(leaf)
    (g,) = torch.autograd.grad(out, leaf)
    # the weights reported in the stats are the effective ∂objective/∂L_t
    torch.testing.assert_close(method.last_weights, g, rtol=1e-6, atol=1e-12)
    return out.detach(), g


def hand_softmax(x):
    e = [math.exp(v - max(x)) for v in x]
    return [v / sum(e) for v in e]


class Net(torch.nn.Module):
    def __init__(self, num_tasks=3):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh())
        self.heads = torch.nn.ModuleList(torch.nn.Linear(8, 1) for _ in range(num_tasks))

    def losses(self, x, y):
        h = self.trunk(x)
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


def make_net(seed=0):
    torch.manual_seed(seed)
    net = Net(3)
    gen = torch.Generator().manual_seed(seed + 100)
    batches = [(torch.randn(6, 5, generator=gen), torch.randn(6, 3, generator=gen) * torch.tensor([1.0, -2.0, 0.5]))
               for _ in range(8)]
    return net, batches


def build_loss_method(name, net):
    """The loss-space method ``name`` for :class:`Net` (options of the hand-written objectives)."""
    options = {"stch": {"mu": 0.5, "ideal": "running_min"}, "gradnorm": {"alpha": 1.5}}.get(name, {})
    return gradsurg.methods.build_method(name, num_tasks=3, layer=list(net.trunk[2].parameters()), **options)


def run(opt, net, batches):
    for x, y in batches:
        opt.zero_grad()
        opt.backward(net.losses(x, y))
        opt.step()


def check_first_step_is_hand_objective(name, hand_objective):
    """One GradSurgery step of the loss-space method ``name`` on :class:`Net` gives every
    parameter the gradient of ``hand_objective(losses, net)`` (the paper's objective of the first
    step, built independently of the method classes), then an SGD step. Returns
    ``(method, GradSurgery, reference net, its losses)`` for method-specific checks."""
    net, batches = make_net()
    ref = copy.deepcopy(net)
    method = build_loss_method(name, net)
    opt = GradSurgery(torch.optim.SGD(net.parameters(), lr=0.1), method=method)
    x, y = batches[0]
    stats = opt.backward(net.losses(x, y))
    hand_L = ref.losses(x, y)
    grads = torch.autograd.grad(hand_objective(hand_L, ref), list(ref.parameters()), retain_graph=True)
    for (pname, p), g in zip(net.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7, msg=f"{name}: {pname}")
    assert stats.gram is None
    assert stats.weights.shape == (3,) and bool(torch.isfinite(stats.weights).all())
    assert stats.method == name and not stats.skipped
    before = [p.detach().clone() for p in net.parameters()]
    opt.step()
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.detach(), b - 0.1 * p.grad)
    return method, opt, ref, hand_L
