"""GradSurgery's path for loss-space methods: one objective, one backward, ordinary gradients."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery
from gradsurg.methods.base import LossWeighting


class LazyScales(LossWeighting):
    """Objective Σ_t exp(s_t) L_t with learnable s created at the first call (lazily)."""

    name = ""

    def __init__(self) -> None:
        super().__init__()
        self.s: torch.nn.Parameter | None = None

    def objective(self, losses):
        if self.s is None:
            self.s = torch.nn.Parameter(torch.zeros(losses.numel(), dtype=losses.dtype))
        w = self.s.exp()
        self.last_weights = w.detach().double()
        return (w * losses).sum() - self.s.sum()


class CountingWeights(LossWeighting):
    """Stateful weights 1, 2, 3, … advanced at every objective (to test state restoration)."""

    name = ""
    stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def loss_weights(self, losses):
        self.calls += 1
        return torch.full(losses.shape, float(self.calls), dtype=torch.float64)

    def get_extra_state(self):
        return {**super().get_extra_state(), "calls": self.calls}

    def set_extra_state(self, state):
        super().set_extra_state(state)
        self.calls = state["calls"]


def test_lazy_method_parameters_join_the_optimizer(make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    method = LazyScales()
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=method)
    assert len(opt.param_groups) == 1
    stats = opt.backward(model.losses(x, y))
    assert stats.gram is None and stats.num_conflicts is None and stats.backend == "torch"
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["params"][0] is method.s
    losses = twin.losses(x, y)
    torch.testing.assert_close(method.s.grad, torch.stack(losses).detach() - 1.0)
    sum(losses).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    opt.step()
    assert not torch.equal(method.s.detach(), torch.zeros(3))


def test_reduction_mean_and_stats_weights(make_model):
    model, x, y = make_model(2)
    twin = copy.deepcopy(model)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=CountingWeights(), reduction="mean")
    stats = opt.backward(model.losses(x, y))
    torch.testing.assert_close(stats.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    (sum(twin.losses(x, y)) / 2).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_nonfinite_restores_method_state_and_changes_nothing(make_model):
    model, x, y = make_model(2)
    method = CountingWeights()
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=method)
    opt.backward(model.losses(x, y))
    grads = [p.grad.clone() for p in model.parameters()]
    losses = model.losses(x, y)
    with pytest.raises(FloatingPointError, match=r"losses: non-finite gradients for task\(s\) \['1'\]"):
        opt.backward([losses[0], losses[1] * float("inf")])
    assert method.calls == 1
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    opt.nonfinite = "skip"
    losses = model.losses(x, y)
    stats = opt.backward([losses[0], losses[1] * float("nan")])
    assert stats.skipped and method.calls == 1


def test_matrix_method_mean_reduction_scales_only_the_new_gradient(make_model):
    # GradDrop with leak=1 keeps every component: its combination is the plain sum.
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1),
                      method=gradsurg.get_method("graddrop", leak=1.0), reduction="mean")
    opt.backward(model.losses(x, y))
    opt.backward(model.losses(x, y))  # accumulates: twice the mean gradient
    (2 * sum(twin.losses(x, y)) / 3).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
