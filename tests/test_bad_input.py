"""Every bad input gets a clear error naming the argument, and nothing is changed."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery


def snapshot(model, opt):
    """Parameters, .grad and optimizer/method state, deep-copied for exact comparison."""
    return (
        [p.detach().clone() for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        copy.deepcopy(opt.state_dict()),
    )


def assert_unchanged(before, model, opt):
    params, grads, state = before
    for p, b in zip(model.parameters(), params):
        assert torch.equal(p.detach(), b)
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    after = opt.state_dict()
    assert repr(after["state"]) == repr(state["state"])
    assert after["param_groups"] == state["param_groups"]
    if "gradsurg" in state:
        assert repr(after["gradsurg"]) == repr(state["gradsurg"])


@pytest.fixture
def trained(make_model):
    """A model after two AdamW steps with GradVac, so optimizer and method have state."""
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.AdamW(model.parameters(), lr=1e-2), method="gradvac")
    for _ in range(2):
        opt.zero_grad()
        opt.backward(model.losses(x, y))
        opt.step()
    return model, opt, x, y


@pytest.mark.parametrize(
    "losses,exc,match",
    [
        ([], ValueError, r"losses: no losses"),
        ({}, ValueError, r"losses: no losses"),
        (torch.tensor(1.0, requires_grad=True), TypeError, r"losses: .*single tensor"),
        (["a"], TypeError, r"losses\['0'\]: expected a tensor"),
        (42, TypeError, r"losses: expected a list or dict"),
    ],
)
def test_malformed_losses(trained, losses, exc, match):
    model, opt, _, _ = trained
    before = snapshot(model, opt)
    with pytest.raises(exc, match=match):
        opt.backward(losses)
    assert_unchanged(before, model, opt)


def test_non_scalar_loss(trained):
    model, opt, x, y = trained
    losses = model.losses(x, y)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=r"losses\['vec'\]: expected a scalar loss, got shape \(8,\)"):
        opt.backward({"a": losses[0], "vec": model.trunk(x)[:, 0], "c": losses[2]})
    assert_unchanged(before, model, opt)


def test_loss_without_grad_path(trained):
    model, opt, x, y = trained
    losses = model.losses(x, y)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=r"losses\['2'\]: does not require grad"):
        opt.backward([losses[0], losses[1], torch.tensor(3.0)])
    outsider = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"losses\['2'\]: reaches none of the wrapped optimizer's parameters"):
        opt.backward([losses[0], losses[1], outsider.sum()])
    assert_unchanged(before, model, opt)


def test_loss_without_grad_path_explicit_shared(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), shared=model.trunk.parameters())
    outsider = torch.nn.Parameter(torch.ones(2))
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=r"losses\['1'\]: reaches none"):
        opt.backward([model.losses(x, y)[0], outsider.sum()])
    assert_unchanged(before, model, opt)


def test_task_count_change_for_stateful_method(trained):
    model, opt, x, y = trained
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=r"losses: GradVac is stateful and was used with 3 tasks; got 2"):
        opt.backward(model.losses(x, y)[:2])
    assert_unchanged(before, model, opt)
    opt.method.reset()
    opt.backward(model.losses(x, y)[:2])  # allowed after reset


def test_task_count_may_change_for_stateless_method(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="mgda")
    assert opt.backward(model.losses(x, y)).weights.shape == (3,)
    assert opt.backward(model.losses(x, y)[:2]).weights.shape == (2,)


def test_unknown_method_lists_known_ones(make_model):
    model, _, _ = make_model(2)
    with pytest.raises(ValueError, match=r"method: unknown method 'pcgard'; known methods: sum, mean, pcgrad"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgard")
    with pytest.raises(TypeError, match=r"method: expected a method name"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=3)


def test_sparse_gradients(make_model):
    emb = torch.nn.Embedding(10, 4, sparse=True)
    heads = torch.nn.ModuleList(torch.nn.Linear(4, 1) for _ in range(2))
    opt = GradSurgery(torch.optim.SGD([*emb.parameters(), *heads.parameters()], lr=0.1))
    h = emb(torch.tensor([1, 2, 3]))
    before = [p.detach().clone() for p in emb.parameters()]
    with pytest.raises(ValueError, match=r"losses\['0'\]: parameter 0 of the optimizer got a sparse gradient"):
        opt.backward([heads[0](h).sum(), heads[1](h).sum()])
    assert emb.weight.grad is None and torch.equal(emb.weight.detach(), before[0])


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"reduction": "avg"}, ValueError, r"reduction: expected one of \('sum', 'mean'\), got 'avg'"),
        ({"nonfinite": "ignore"}, ValueError, r"nonfinite: expected one of"),
        ({"backend": "cuda9"}, ValueError, r"backend: unknown backend 'cuda9'; known backends: auto, torch, cpp, triton, cuda"),
        ({"task_weights": ["x"]}, TypeError, r"task_weights: expected a sequence of numbers"),
        ({"task_weights": [1.0, float("nan")]}, ValueError, r"task_weights: weights must be finite"),
    ],
)
def test_bad_constructor_arguments(make_model, kwargs, exc, match):
    model, _, _ = make_model(2)
    with pytest.raises(exc, match=match):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_bad_optimizer_and_shared(make_model):
    model, _, _ = make_model(2)
    with pytest.raises(TypeError, match=r"optimizer: expected a torch.optim.Optimizer"):
        GradSurgery(list(model.parameters()))
    outsider = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"shared: parameter 0 \(shape \(2,\)\) is not in the wrapped optimizer"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), shared=[outsider])
    with pytest.raises(ValueError, match=r"shared: no parameters given"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), shared=[])
    with pytest.raises(TypeError, match=r"shared: item 0 is a str"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), shared=["w"])


def test_task_weights_count_and_names_checked_per_step(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), task_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"task_weights: has 3 entries but 2 losses were given"):
        opt.backward(model.losses(x, y))
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), task_weights={"cls": 2.0})
    with pytest.raises(ValueError, match=r"task_weights: no loss named \['cls'\]"):
        opt.backward(dict(zip("ab", model.losses(x, y))))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["shared", "head"])
def test_nonfinite_raise_changes_nothing(trained, bad, where):
    model, opt, x, y = trained
    losses = model.losses(x, y)
    if where == "shared":
        poisoned = losses[1] * torch.tensor(bad)
    else:
        poisoned = losses[1] + bad * model.heads[1].bias.sum()
    before = snapshot(model, opt)
    with pytest.raises(FloatingPointError, match=r"losses: non-finite gradients for task\(s\) \['1'\]"):
        opt.backward([losses[0], poisoned, losses[2]])
    assert_unchanged(before, model, opt)


def test_nonfinite_skip_skips_the_step(trained):
    model, opt, x, y = trained
    opt.nonfinite = "skip"
    losses = model.losses(x, y)
    opt.zero_grad()
    before = snapshot(model, opt)
    stats = opt.backward([losses[0], losses[1] * float("nan"), losses[2]])
    assert stats.skipped and stats.nonfinite_tasks == ("1",)
    assert torch.equal(stats.weights, torch.zeros(3, dtype=torch.float64))
    opt.step()  # a no-op after a skipped backward
    assert_unchanged(before, model, opt)
    # The next finite step goes through normally.
    opt.zero_grad()
    stats = opt.backward(model.losses(x, y))
    assert not stats.skipped
    opt.step()
    assert any(not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before[0]))


def test_method_argument_checks():
    with pytest.raises(ValueError, match=r"c: must be non-negative"):
        gradsurg.get_method("cagrad", c=-1)
    with pytest.raises(ValueError, match=r"rescale: must be 0, 1 or 2"):
        gradsurg.get_method("cagrad", rescale=5)
    with pytest.raises(ValueError, match=r"beta: must be in \[0, 1\]"):
        gradsurg.get_method("gradvac", beta=2.0)
    with pytest.raises(ValueError, match=r"gram: expected a square"):
        gradsurg.get_method("mgda").weights(torch.ones(2, 3))


def test_functional_bad_input():
    with pytest.raises(TypeError, match=r"grads: expected a \(T, P\) tensor"):
        gradsurg.gramian("nope")
    with pytest.raises(ValueError, match=r"grads: task 1's gradient shapes differ"):
        gradsurg.gramian([[torch.ones(2)], [torch.ones(3)]])
    with pytest.raises(ValueError, match=r"grads: expected a \(T, \.\.\.\) tensor with T ≥ 1"):
        gradsurg.gramian(torch.ones(0, 3))


def test_aggregate_rejects_loss_space_methods_and_runs_matrix_methods():
    matrix = torch.randn(3, 10)
    with pytest.raises(ValueError, match=r"method: 'dwa' weighs the losses, not given gradients"):
        gradsurg.aggregate(matrix, "dwa")
    # GradDrop with leak=1 keeps every component: the plain sum.
    torch.testing.assert_close(gradsurg.aggregate(matrix, gradsurg.get_method("graddrop", leak=1.0)), matrix.sum(0))
