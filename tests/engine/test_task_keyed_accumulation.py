"""Task-keyed accumulation (issue 22): micro-batches of one window may hold any subset of the
tasks — one task per batch, as LLM users hold their data — and the syncing call runs one
surgery over the union, on each task's summed gradients.

Every expectation is written here by hand: plain ``loss.backward()`` accumulation for ``sum``,
and one big-batch step whose task losses are the window's summed (or averaged) task losses.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _stack_methods import build, per_task_gradient_methods

from gradsurg import GradSurgery

METHODS = per_task_gradient_methods()
NAMES = ("a", "b", "c")

#: Which tasks each micro-batch holds.
PATTERNS = {
    "one_task_per_batch": [("a",), ("b",), ("c",)],
    "alternating_twice": [("a",), ("b",), ("c",), ("a",), ("b",), ("c",)],
    "mixed_with_gaps": [("a", "b"), ("c",), ("b",), ("a", "c")],
    "joint": [("a", "b", "c"), ("a", "b", "c")],
}


def _batches(pattern, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, tasks in enumerate(pattern):
        x = torch.randn(5, 6, generator=gen)
        sign = torch.tensor([(-1.0) ** (t + i) for t in range(3)])
        out.append((tasks, x, torch.randn(5, 3, generator=gen) * sign))
    return out


def _losses(model, tasks, x, y):
    every = dict(zip(NAMES, model.losses(x, y)))
    return {t: every[t] for t in tasks}


def _window(opt, model, batches):
    stats = None
    for i, (tasks, x, y) in enumerate(batches):
        stats = opt.backward(_losses(model, tasks, x, y), sync=i == len(batches) - 1)
    return stats


def _summed_losses(model, batches, mean=False):
    """The big batch: each task's losses summed (or averaged) over the micro-batches it is in."""
    out: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for tasks, x, y in batches:
        for t, loss in _losses(model, tasks, x, y).items():
            out[t] = loss if t not in out else out[t] + loss
            counts[t] = counts.get(t, 0) + 1
    return {t: out[t] / counts[t] if mean else out[t] for t in NAMES if t in out}


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_sum_equals_plain_backward_accumulation(pattern, make_model):
    model, _, _ = make_model(3)
    plain = copy.deepcopy(model)
    batches = _batches(PATTERNS[pattern])
    stats = _window(GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="sum"), model, batches)
    for tasks, x, y in batches:
        sum(_losses(plain, tasks, x, y).values()).backward()
    for p, q in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
    # The trunk is shared over the window even when no micro-batch holds two tasks.
    assert stats.gram is not None and stats.gram.shape == (3, 3)
    counts = {t: sum(t in tasks for tasks, _, _ in batches) for t in NAMES}
    assert stats.task_micro_batches == tuple(counts[t] for t in stats.task_names)
    assert stats.micro_batches == len(batches)


@pytest.mark.parametrize("mean", [False, True], ids=["sum", "mean"])
@pytest.mark.parametrize("pattern", ["one_task_per_batch", "mixed_with_gaps"])
@pytest.mark.parametrize("name", METHODS)
def test_any_method_equals_the_big_batch_of_summed_task_losses(name, pattern, mean, make_model):
    model, _, _ = make_model(3)
    big = copy.deepcopy(model)
    batches = _batches(PATTERNS[pattern])
    accumulate = "mean" if mean else "sum"
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=build(name, model, 3), accumulate=accumulate)
    stats = _window(opt, model, batches)
    ref = GradSurgery(torch.optim.SGD(big.parameters(), lr=0.1), method=build(name, big, 3))
    expected = ref.backward(_summed_losses(big, batches, mean=mean))
    assert stats.task_names == expected.task_names
    for p, q in zip(model.parameters(), big.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats.losses, expected.losses)
    torch.testing.assert_close(stats.gram, expected.gram, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats.weights, expected.weights, equal_nan=True, rtol=1e-4, atol=1e-6)


def test_a_task_absent_from_a_window_gets_no_row(make_model):
    model, _, _ = make_model(3)
    big = copy.deepcopy(model)
    batches = _batches([("a",), ("c",)])
    stats = _window(GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad"), model, batches)
    assert stats.task_names == ("a", "c")
    GradSurgery(torch.optim.SGD(big.parameters(), lr=0.1), method="upgrad").backward(_summed_losses(big, batches))
    for p, q in zip(model.parameters(), big.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.heads[1].parameters())


def test_declared_tasks_keep_per_task_state_by_name_across_windows(make_model):
    """GradVac keeps a target per pair of tasks: windows that meet the tasks in different
    orders must give the same updates as big batches in one fixed order."""
    model, _, _ = make_model(3)
    big = copy.deepcopy(model)
    orders = [[("c",), ("a",), ("b",)], [("b",), ("c",), ("a",)], [("a", "c"), ("b",)]]
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="gradvac", tasks=["a", "b", "c"])
    ref = GradSurgery(torch.optim.SGD(big.parameters(), lr=0.05), method="gradvac")
    for seed, pattern in enumerate(orders):
        batches = _batches(pattern, seed=seed)
        opt.zero_grad()
        ref.zero_grad()
        stats = _window(opt, model, batches)
        assert stats.task_names == ("a", "b", "c")
        ref.backward(_summed_losses(big, batches))
        opt.step()
        ref.step()
    for p, q in zip(model.parameters(), big.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gradvac", "nash_mtl", "cr_mogm", "db_mtl"])
def test_a_method_with_per_task_state_needs_every_declared_task(name, make_model):
    model, _, _ = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=build(name, model, 3), tasks=list(NAMES))
    batches = _batches([("a",), ("b",)])
    state = repr(opt.state_dict())
    with pytest.raises(ValueError, match=r"losses: .* keeps per-task state for the declared tasks .* lacks \['c'\]"):
        _window(opt, model, batches)
    assert all(p.grad is None for p in model.parameters())
    assert repr(opt.state_dict()) == state


@pytest.mark.parametrize("name", ["upgrad", "pcgrad", "mgda", "graddrop"])
def test_a_method_without_per_task_state_runs_on_the_tasks_present(name, make_model):
    model, _, _ = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=build(name, model, 3), tasks=list(NAMES))
    stats = _window(opt, model, _batches([("c",), ("a",)]))
    assert stats.task_names == ("a", "c")  # the declared order


def test_an_undeclared_task_is_refused(make_model):
    model, _, _ = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad", tasks=["a", "b"])
    (tasks, x, y), = _batches([("c",)])
    with pytest.raises(ValueError, match=r"losses: task\(s\) \['c'\] are not among the declared tasks"):
        opt.backward(_losses(model, tasks, x, y))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["uw", "imtl_l"])
def test_methods_that_need_the_task_count_are_built_from_the_declared_tasks(name, make_model):
    model, x, y = make_model(3)
    with pytest.raises(ValueError, match="num_tasks"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name, tasks=list(NAMES))
    assert opt.method.name == name
    stats = opt.backward(_losses(model, NAMES, x, y))
    assert stats.task_names == NAMES


def test_a_failed_micro_batch_discards_the_window_and_says_so(make_model):
    model, _, _ = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad")
    (t1, x1, y1), (t2, x2, y2) = _batches([("a",), ("b",)])
    opt.backward(_losses(model, t1, x1, y1), sync=False)
    bad = _losses(model, t2, x2, y2)
    bad["b"] = bad["b"].detach().requires_grad_()  # reaches no parameter
    with pytest.raises(ValueError, match="reaches none"):
        opt.backward(bad)
    # The window is intact after a refusal before any gradient was taken.
    stats = opt.backward(_losses(model, t2, x2, y2))
    assert stats.task_names == ("a", "b")


@pytest.mark.parametrize("declared", [None, list(NAMES)])
def test_task_weights_may_name_tasks_a_micro_batch_lacks(declared, make_model):
    model, _, _ = make_model(3)
    big = copy.deepcopy(model)
    weights = {"a": 2.0, "b": 0.5, "c": 1.5}
    batches = _batches([("a",), ("b",), ("c",)])
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad", task_weights=weights, tasks=declared)
    _window(opt, model, batches)
    ref = GradSurgery(torch.optim.SGD(big.parameters(), lr=0.1), method="upgrad", task_weights=weights)
    ref.backward(_summed_losses(big, batches))
    for p, q in zip(model.parameters(), big.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    # A weight for a task no step ever has is still an error (a typo), at the syncing call or
    # at construction when the tasks are declared.
    typo = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad", task_weights={"a": 1.0, "d": 2.0})
    with pytest.raises(ValueError, match=r"task_weights: no loss named \['d'\]"):
        _window(typo, model, batches)
    with pytest.raises(ValueError, match=r"^task_weights: no declared task named \['d'\]"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad", task_weights={"d": 2.0}, tasks=list(NAMES))
