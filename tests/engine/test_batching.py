"""batch_tasks=: the per-task gradients as vmapped autograd calls equal one pass per task, and a
model that cannot be vmapped falls back to one pass per task (never a wrong update)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from _stack_methods import build, per_task_gradient_methods
from torch.utils.checkpoint import checkpoint

from gradsurg import GradSurgery

METHODS = per_task_gradient_methods()


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _run(model, x, y, name, num_tasks, steps=2, **options):
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=build(name, model, num_tasks), **options)
    stats = []
    for _ in range(steps):
        opt.zero_grad()
        stats.append(opt.backward(model.losses(x, y)))
        opt.step()
    return stats


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("chunk", [True, 2])
def test_batched_equals_one_pass_per_task(name, chunk, make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    _run(model, x, y, name, 3)
    stats = _run(twin, x, y, name, 3, batch_tasks=chunk)
    assert stats[-1].tasks_per_backward == (3 if chunk is True else 2)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7)


def test_batched_accumulation_equals_the_big_batch(make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad", batch_tasks=True)
    opt.backward(model.losses(x[:4], y[:4]), sync=False)
    stats = opt.backward(model.losses(x[4:], y[4:]))
    ref = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method="upgrad")
    first, second = twin.losses(x[:4], y[:4]), twin.losses(x[4:], y[4:])
    ref.backward([a + b for a, b in zip(first, second)])
    assert stats.micro_batches == 2 and stats.tasks_per_backward == 3
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)


class _CheckpointedTrunk(torch.nn.Module):
    """The trunk under non-reentrant activation checkpointing (recomputed inside the batched
    backward)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.trunk, self.heads = model.trunk, model.heads

    def losses(self, x, y):
        h = checkpoint(self.trunk, x, use_reentrant=False)
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


def test_checkpointed_trunk_batched_equals_eager(make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    _run(model, x, y, "pcgrad", 3)
    stats = _run(_CheckpointedTrunk(twin), x, y, "pcgrad", 3, batch_tasks=True)
    assert [s.tasks_per_backward for s in stats] == [3, 3]
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


class _NoVmap(torch.autograd.Function):
    """An autograd.Function whose backward reads a value on the host (data-dependent control
    flow, as gradient-clipping functions do), which vmap cannot batch."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        scale = 2.0 if float(grad.abs().max()) >= 0 else 0.0
        return grad * scale + 0 * x


def test_custom_function_without_vmap_rule_falls_back_once(make_model):
    model, x, y = make_model(2)
    twin = copy.deepcopy(model)

    class Doubled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.trunk, self.heads = m.trunk, m.heads

        def losses(self, x, y):
            h = _NoVmap.apply(self.trunk(x))
            return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]

    ref, bat = Doubled(model), Doubled(twin)
    _run(ref, x, y, "mgda", 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = _run(bat, x, y, "mgda", 2, batch_tasks=True)
    ours = [w for w in caught if "batch_tasks: this model cannot run the task gradients" in str(w.message)]
    assert len(ours) == 1  # one warning, then one pass per task for the rest of the run
    assert stats[-1].tasks_per_backward == 1
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7)


def test_retain_graph_and_a_chunk_larger_than_t(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad", batch_tasks=8)
    losses = model.losses(x, y)
    assert opt.backward(losses, retain_graph=True).tasks_per_backward == 2
    sum(losses).backward()  # the graph is still there


@pytest.mark.parametrize("bad", [0, -1, 1.5, "yes", None])
def test_bad_batch_tasks_is_refused_by_name(bad, make_model):
    model, _, _ = make_model(2)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    before = copy.deepcopy(inner.state_dict())
    with pytest.raises(ValueError, match="batch_tasks: expected True, False or a number of tasks"):
        GradSurgery(inner, method="pcgrad", batch_tasks=bad)
    assert inner.state_dict() == before


@pytest.mark.parametrize("name", ["famo", "cosreg", "uw"])
def test_batch_tasks_needs_per_task_gradients(name, make_model):
    model, _, _ = make_model(2)
    with pytest.raises(ValueError, match=r"batch_tasks: .* computes no per-task gradients"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=build(name, model, 2), batch_tasks=True)
