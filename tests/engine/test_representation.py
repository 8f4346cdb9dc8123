"""Representation-level surgery, backward(losses, features=h): exactly parameter-level surgery
where the docstring says so, an approximation elsewhere."""

from __future__ import annotations

import copy

import pytest
import torch

from gradsurg import GradSurgery

GRAM_METHODS = ["pcgrad", "mgda", "upgrad", "cagrad", "imtl_g", "nash_mtl"]


class LinearTrunk(torch.nn.Module):
    """h = W x on one unit-norm input (∂h/∂W has orthonormal rows), three nonlinear heads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Linear(5, 4, bias=False)
        self.heads = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)) for _ in range(3)
        )

    def losses(self, x, y, with_features=False):
        h = self.trunk(x)
        losses = [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]
        return (losses, h) if with_features else losses


def _unit_input():
    x = torch.randn(1, 5, generator=torch.Generator().manual_seed(2))
    return x / x.norm(), torch.tensor([[1.0, -2.0, 0.5]])


@pytest.mark.parametrize("name", GRAM_METHODS)
def test_equal_to_parameter_level_when_the_trunk_jacobian_is_orthonormal(name):
    model = LinearTrunk()
    twin = copy.deepcopy(model)
    x, y = _unit_input()
    param = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name)
    expected = param.backward(model.losses(x, y))
    rep = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method=name)
    losses, h = twin.losses(x, y, with_features=True)
    stats = rep.backward(losses, features=h)
    torch.testing.assert_close(stats.gram, expected.gram, rtol=1e-5, atol=1e-9)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)


def test_equal_for_weights_that_ignore_the_gram_and_approximate_otherwise(make_model):
    model, x, y = make_model(3)
    for name, exact in (("mean", True), ("mgda", False)):
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        GradSurgery(torch.optim.SGD(a.parameters(), lr=0.1), method=name).backward(a.losses(x, y))
        h = b.trunk(x)
        losses = [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(b.heads)]
        GradSurgery(torch.optim.SGD(b.parameters(), lr=0.1), method=name).backward(losses, features=h)
        close = all(
            torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7) for p, q in zip(a.parameters(), b.parameters())
        )
        assert close == exact, name
        # Heads always get their ordinary gradient.
        for ha, hb in zip(a.heads.parameters(), b.heads.parameters()):
            torch.testing.assert_close(ha.grad, hb.grad)


def test_features_must_come_after_every_shared_parameter(make_model):
    model, x, y = make_model(2)
    h = model.trunk[0](x)  # a shared layer follows h
    out = model.trunk[2](torch.tanh(h))
    losses = [((head(out).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(model.heads)]
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="mgda")
    with pytest.raises(ValueError, match="features: 2 shared parameter"):
        opt.backward(losses, features=h)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_trunk_gradient_that_overflows_is_a_nonfinite_step(policy):
    # dL/dh is finite (1e10) but dL/dW = x·dL/dh overflows float32: nothing may be written.
    w = torch.nn.Parameter(torch.tensor([1e-30]))
    heads = torch.nn.ModuleList(torch.nn.Linear(1, 1) for _ in range(2))
    with torch.no_grad():
        for head in heads:
            head.weight.fill_(1.0)
            head.bias.zero_()
    x = torch.tensor([[3e38]])
    h = w * x
    losses = [head(h).sum() * 1e10 for head in heads]
    opt = GradSurgery(torch.optim.SGD([w, *heads.parameters()], lr=0.1), method="mgda", nonfinite=policy)
    if policy == "raise":
        with pytest.raises(FloatingPointError, match="non-finite gradients for task"):
            opt.backward(losses, features=h)
    else:
        assert opt.backward(losses, features=h).skipped
    assert w.grad is None and all(p.grad is None for p in heads.parameters())
