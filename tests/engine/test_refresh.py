"""refresh_every=k: per-task gradients, Gram and weights every k-th step; in between one backward
of Σ_t w_t L_t with the cached weights."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery


def _run(model, x, y, opt, steps):
    out = []
    for _ in range(steps):
        opt.zero_grad()
        out.append(opt.backward(model.losses(x, y)))
        opt.step()
    return out


def test_refresh_steps_are_exact_and_cached_steps_reuse_the_weights(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="mgda", refresh_every=3)
    stats = _run(model, x, y, opt, 7)
    assert [s.refreshed for s in stats] == [True, False, False, True, False, False, True]
    assert all(s.gram is None for s in stats if not s.refreshed)
    torch.testing.assert_close(stats[1].weights, stats[0].weights)
    torch.testing.assert_close(stats[2].weights, stats[0].weights)


def test_a_cached_step_is_the_weighted_sum_with_ordinary_head_gradients(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="mgda", refresh_every=2)
    first = _run(model, x, y, opt, 1)[0]
    opt.zero_grad()
    stats = opt.backward(model.losses(x, y))
    assert not stats.refreshed
    w = first.weights.tolist()
    for p in model.trunk.parameters():
        per_task = [torch.autograd.grad(model.losses(x, y)[t], p)[0] for t in range(3)]
        torch.testing.assert_close(p.grad, sum(wt * g for wt, g in zip(w, per_task)), rtol=1e-5, atol=1e-7)
    for t, head in enumerate(model.heads):
        for p in head.parameters():
            torch.testing.assert_close(p.grad, torch.autograd.grad(model.losses(x, y)[t], p)[0], rtol=1e-5, atol=1e-7)


def test_a_zero_cached_weight_keeps_that_tasks_head_gradient(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="mgda", refresh_every=2)
    _run(model, x, y, opt, 1)
    opt._engine.refresh.cached = (opt._engine.refresh.cached[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    opt.zero_grad()
    opt.backward(model.losses(x, y))
    p = model.heads[1].weight
    torch.testing.assert_close(p.grad, torch.autograd.grad(model.losses(x, y)[1], p)[0])


def test_refresh_every_one_is_the_plain_method_and_resume_is_exact(make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    a = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="pcgrad", refresh_every=4)
    _run(model, x, y, a, 2)
    b = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.05), method="pcgrad", refresh_every=4)
    _run(twin, x, y, b, 2)
    b2 = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.05), method="pcgrad", refresh_every=4)
    b2.load_state_dict(b.state_dict())
    sa, sb = _run(model, x, y, a, 4), _run(twin, x, y, b2, 4)
    assert [s.refreshed for s in sa] == [s.refreshed for s in sb] == [False, False, True, False]
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_cached_steps_accumulate(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="upgrad", refresh_every=2)
    _run(model, x, y, opt, 1)
    opt.zero_grad()
    assert opt.backward(model.losses(x, y), sync=False) is None
    stats = opt.backward(model.losses(x, y))
    assert not stats.refreshed
    twin_grads = [p.grad.clone() for p in model.parameters()]
    opt.zero_grad()
    opt._engine.refresh.since = 1
    opt.backward([2 * v for v in model.losses(x, y)])
    for g, p in zip(twin_grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("name", ["graddrop", "famo"])
def test_refresh_every_needs_a_gram_method(name, make_model):
    model, _, _ = make_model(2)
    with pytest.raises(ValueError, match=rf"refresh_every: {name} has no task weights to reuse"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method=name, refresh_every=2)
    with pytest.raises(ValueError, match="refresh_every: expected an int"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="pcgrad", refresh_every=0)
    assert gradsurg.available_methods()
