"""The functional step (gradsurg.backward): the optimizer's step without the optimizer, on every
registered method, and its own checks."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery


def _model_and_data(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.ModuleDict(
        {
            "trunk": torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh()),
            "a": torch.nn.Linear(6, 1),
            "b": torch.nn.Linear(6, 1),
            "c": torch.nn.Linear(6, 1),
        }
    )
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(8, 4, generator=gen), torch.randn(8, 3, generator=gen)) for _ in range(3)]
    return model, batches


def _losses(model, x, y):
    h = model["trunk"](x)
    return {t: ((model[t](h).squeeze(-1) - y[:, i] * (-1) ** i) ** 2).mean() for i, t in enumerate("abc")}


def _build(name: str, model):
    return gradsurg.build_method(name, num_tasks=3, layer=list(model["trunk"].parameters()))


@pytest.mark.parametrize("name", gradsurg.available_methods())
def test_the_functional_step_is_the_optimizers_step(name):
    """Three steps: GradSurgery.backward + step on one copy, gradsurg.backward + the plain
    optimizer's step on the other; every .grad and parameter equal bit for bit."""
    model_a, batches = _model_and_data()
    model_b = copy.deepcopy(model_a)
    method_a, method_b = _build(name, model_a), _build(name, model_b)
    method_b.load_state_dict(method_a.state_dict())
    opt_a = GradSurgery(torch.optim.SGD(model_a.parameters(), lr=0.05), method=method_a)
    # The functional caller owns the optimizer: the method's learnable parameters are its to add.
    own = [p for p in method_b.parameters() if p.requires_grad]
    opt_b = torch.optim.SGD([{"params": list(model_b.parameters())}, *([{"params": own}] if own else [])], lr=0.05)
    for x, y in batches:
        opt_a.zero_grad()
        opt_b.zero_grad()
        stats_a = opt_a.backward(_losses(model_a, x, y))
        stats_b = gradsurg.backward(_losses(model_b, x, y), model_b.parameters(), method=method_b)
        assert stats_a is not None
        torch.testing.assert_close(stats_a.weights, stats_b.weights, rtol=0, atol=0, equal_nan=True)
        for pa, pb in zip(model_a.parameters(), model_b.parameters()):
            assert torch.equal(pa.grad, pb.grad)
        opt_a.step()
        opt_b.step()
        method_b.after_step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)


def test_a_stateful_method_by_name_is_refused():
    model, batches = _model_and_data()
    with pytest.raises(ValueError, match=r"^method: 'gradvac' keeps state between steps"):
        gradsurg.backward(_losses(model, *batches[0]), model.parameters(), method="gradvac")
    assert all(p.grad is None for p in model.parameters())


def test_per_task_state_follows_the_names_across_calls():
    """A stateful instance keeps its state in the order of its first step's task names, also
    when a later call's dict comes in another order."""
    model_a, batches = _model_and_data()
    model_b = copy.deepcopy(model_a)
    method_a, method_b = gradsurg.build_method("gradvac"), gradsurg.build_method("gradvac")
    for step, (x, y) in enumerate(batches):
        for model in (model_a, model_b):
            model.zero_grad()
        gradsurg.backward(_losses(model_a, x, y), model_a.parameters(), method=method_a)
        losses = _losses(model_b, x, y)
        if step > 0:
            losses = dict(reversed(list(losses.items())))
        gradsurg.backward(losses, model_b.parameters(), method=method_b)
        for pa, pb in zip(model_a.parameters(), model_b.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-6, atol=1e-7)


def test_bad_params_name_the_argument():
    model, batches = _model_and_data()
    losses = _losses(model, *batches[0])
    with pytest.raises(TypeError, match=r"^params: item 0 is a str"):
        gradsurg.backward(losses, ["w"], method="upgrad")
    with pytest.raises(ValueError, match=r"^params: no parameter that requires grad"):
        gradsurg.backward(losses, [torch.ones(2)], method="upgrad")
    with pytest.raises(ValueError, match=r"^groups: gradvac is stateful"):
        gradsurg.backward(losses, model.parameters(), method=gradsurg.build_method("gradvac"), groups="parameter")
    assert all(p.grad is None for p in model.parameters())


def test_the_hand_computed_step():
    """Against the textbook computation, per vector: per-task gradients, G, the weights of a
    fresh UPGrad, Σ_t w_t g_t into the trunk, the plain gradient into the heads."""
    model, batches = _model_and_data()
    losses = _losses(model, *batches[0])
    trunk = list(model["trunk"].parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, trunk, retain_graph=True)]) for loss in losses.values()]
    J = torch.stack(rows).double()
    w = gradsurg.get_method("upgrad").weights(J @ J.T)
    heads = {t: torch.autograd.grad(losses[t], list(model[t].parameters()), retain_graph=True) for t in "abc"}
    stats = gradsurg.backward(losses, model.parameters(), method="upgrad")
    torch.testing.assert_close(stats.weights, w, rtol=1e-6, atol=1e-9)
    got = torch.cat([p.grad.reshape(-1) for p in trunk]).double()
    torch.testing.assert_close(got, w @ J, rtol=1e-6, atol=1e-7)
    for t in "abc":
        for p, g in zip(model[t].parameters(), heads[t]):
            torch.testing.assert_close(p.grad, g)
