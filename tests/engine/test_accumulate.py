"""Gradient accumulation with one-big-batch semantics: ``backward(losses, sync=False)`` on K-1
micro-batches, then ``backward(losses)``, equals one surgery of the summed per-task gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from _stack_methods import build, per_task_gradient_methods

import gradsurg
from gradsurg import GradSurgery

METHODS = per_task_gradient_methods()


def _micro_batches(num_tasks, k=3, seed=0):
    """K micro-batches whose per-task gradients conflict with each other, not only across tasks."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(k):
        x = torch.randn(5, 6, generator=gen)
        sign = torch.tensor([(-1.0) ** (t + i) for t in range(num_tasks)])
        out.append((x, torch.randn(5, num_tasks, generator=gen) * sign))
    return out


@pytest.mark.parametrize("name", METHODS)
def test_accumulated_step_equals_the_big_batch(name, make_model):
    model, _, _ = make_model(3)
    big = copy.deepcopy(model)
    batches = _micro_batches(3)
    acc = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=build(name, model, 3))
    for i, (x, y) in enumerate(batches):
        stats = acc.backward(model.losses(x, y), sync=i == len(batches) - 1)
        if i < len(batches) - 1:
            assert stats is None and all(p.grad is None for p in model.parameters())
    ref = GradSurgery(torch.optim.SGD(big.parameters(), lr=0.1), method=build(name, big, 3))
    per_batch = [big.losses(x, y) for x, y in batches]
    summed = [sum(ls[t] for ls in per_batch) for t in range(3)]
    expected = ref.backward(summed)
    for p, q in zip(model.parameters(), big.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    # The stats describe the accumulated step.
    assert stats.micro_batches == 3
    torch.testing.assert_close(stats.losses, expected.losses)
    torch.testing.assert_close(stats.gram, expected.gram, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats.weights, expected.weights, equal_nan=True, rtol=1e-4, atol=1e-6)


def test_accumulation_differs_from_a_sum_of_surgeries(make_model):
    # The reason for sync=False: K plain backward calls add K surgeries, not the big batch's.
    model, _, _ = make_model(2)
    twin = copy.deepcopy(model)
    batches = _micro_batches(2)
    acc = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="mgda")
    for i, (x, y) in enumerate(batches):
        acc.backward(model.losses(x, y), sync=i == len(batches) - 1)
    naive = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method="mgda")
    for x, y in batches:
        naive.backward(twin.losses(x, y))
    trunk = model.trunk[0].weight.grad
    assert not torch.allclose(trunk, twin.trunk[0].weight.grad, rtol=1e-3)


def test_step_refuses_an_unsynced_accumulation_and_zero_grad_discards_it(make_model):
    model, _, _ = make_model(2)
    (x, y), _ = _micro_batches(2, k=2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    before = [p.detach().clone() for p in model.parameters()]
    opt.backward(model.losses(x, y), sync=False)
    with pytest.raises(RuntimeError, match=r"step: 1 micro-batch\(es\) were accumulated"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    opt.zero_grad()
    opt.step()  # nothing pending any more, no gradients: a plain no-op step


@pytest.mark.parametrize("name", sorted(set(gradsurg.available_methods()) - set(METHODS)))
def test_sync_false_is_refused_for_methods_that_weigh_losses(name, make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=build(name, model, 2))
    with pytest.raises(ValueError, match=r"sync: .* cannot be accumulated"):
        opt.backward(model.losses(x, y), sync=False)
    assert all(p.grad is None for p in model.parameters())


def test_nonfinite_micro_batch_skips_the_whole_accumulated_step(make_model):
    model, _, _ = make_model(2)
    batches = _micro_batches(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad", nonfinite="skip")
    for i, (x, y) in enumerate(batches):
        losses = model.losses(x, y)
        if i == 1:
            losses[0] = losses[0] * float("inf")
        stats = opt.backward(losses, sync=i == len(batches) - 1)
    assert stats.skipped and stats.nonfinite_tasks == ("0",) and stats.micro_batches == 3
    assert all(p.grad is None for p in model.parameters())
