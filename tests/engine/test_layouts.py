"""Shared parameters of several dtypes (one J per (device, dtype) group, the Gram summed in
float64, one set of weights), and parameters outside the wrapped optimizer."""

from __future__ import annotations

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery


class MixedTrunk(torch.nn.Module):
    """A float64 first layer (like fp32 ``keep_in_fp32_modules`` beside a bf16 model) and a
    float32 rest, with two float32 heads."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Linear(5, 7).double()
        self.second = torch.nn.Linear(7, 7)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(7, 1) for _ in range(3))

    def losses(self, x, y):
        h = torch.tanh(self.second(torch.tanh(self.first(x.double())).float()))
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


def _data():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(9, 5, generator=gen), torch.randn(9, 3, generator=gen) * torch.tensor([1.0, -1.0, 1.0])


@pytest.mark.parametrize("name", ["pcgrad", "mgda", "upgrad", "nash_mtl", "cagrad"])
def test_mixed_dtypes_equal_the_surgery_of_the_concatenated_gradients(name):
    torch.manual_seed(0)
    model = MixedTrunk()
    x, y = _data()
    shared = [*model.first.parameters(), *model.second.parameters()]
    # Reference: per-task gradients by plain autograd, concatenated in float64, one aggregate.
    rows = []
    for t in range(3):
        grads = torch.autograd.grad(model.losses(x, y)[t], shared)
        rows.append(torch.cat([g.double().reshape(-1) for g in grads]))
    expected = gradsurg.aggregate(torch.stack(rows), name, backend="torch")
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name)
    stats = opt.backward(model.losses(x, y))
    got = torch.cat([p.grad.double().reshape(-1) for p in shared])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert [p.grad.dtype for p in shared] == [p.dtype for p in shared]
    torch.testing.assert_close(stats.gram, torch.stack(rows) @ torch.stack(rows).T, rtol=1e-5, atol=1e-9)


def test_matrix_methods_need_one_layout():
    model = MixedTrunk()
    x, y = _data()
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="graddrop")
    with pytest.raises(
        ValueError, match=r"shared: graddrop works on J itself and needs the shared parameters on one device"
    ):
        opt.backward(model.losses(x, y))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["pcgrad", "graddrop", "uw", "cosreg"])
def test_parameters_outside_the_optimizer_get_their_ordinary_gradient(name, make_model):
    model, x, y = make_model(2)
    heads = list(model.heads.parameters())
    method = gradsurg.get_method("uw", num_tasks=2) if name == "uw" else name
    opt = GradSurgery(torch.optim.SGD(model.trunk.parameters(), lr=0.1), method=method)
    head_opt = torch.optim.SGD(heads, lr=0.1)
    losses = model.losses(x, y)
    expected = torch.autograd.grad(sum(losses), heads, retain_graph=True)
    stats = opt.backward(losses)
    if name in ("uw", "cosreg"):
        # The objective weighs the losses: the heads get the gradient of that objective.
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in heads)
    else:
        for p, g in zip(heads, expected):
            torch.testing.assert_close(p.grad, g)
    assert not stats.skipped
    head_opt.step()  # the second optimizer steps on them as usual
