"""Issue 10's hard inputs on the step itself: each case failed (or misled) before, silently or
with the wrong error; each now gives the eager answer or a clear error with nothing changed."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery

LOSS_SPACE = ["famo", "gradnorm", "dwa", "uw", "rlw", "stch", "gls"]


def _method(name, model, num_tasks):
    """The method by name; GradNorm balances the gradient norms at the trunk's last layer."""
    if name == "gradnorm":
        return gradsurg.get_method(name, num_tasks=num_tasks, layer=model.trunk[2].weight)
    if name == "uw":
        return gradsurg.get_method(name, num_tasks=num_tasks)
    return name


def _nan_second(losses):
    return [losses[0], losses[1] * float("nan"), *losses[2:]]


def _snapshot(model, opt):
    return (
        [p.detach().clone() for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        repr(opt.state_dict()),
    )


@pytest.mark.parametrize("name", [*LOSS_SPACE, "db_mtl", "pcgrad", "cosreg"])
def test_a_nan_loss_goes_through_the_nonfinite_policy(name, make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=_method(name, model, 2), nonfinite="skip")
    # One good step first, so stateful methods (DWA's history, FAMO's previous losses) have state.
    opt.zero_grad()
    opt.backward(model.losses(x, y))
    opt.step()
    opt.zero_grad(set_to_none=False)
    before = _snapshot(model, opt)
    stats = opt.backward(_nan_second(model.losses(x, y)))
    assert stats.skipped and stats.nonfinite_tasks == ("1",)
    opt.step()
    params, grads, state = _snapshot(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(params, before[0]))
    assert all(torch.equal(a, b) for a, b in zip(grads, before[1]))
    assert state == before[2]
    raising = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=_method(name, model, 2))
    with pytest.raises(FloatingPointError, match=r"losses: non-finite gradients for task\(s\) \['1'\]"):
        raising.backward(_nan_second(model.losses(x, y)))


@pytest.mark.parametrize("name", ["dwa", "famo", "gradnorm"])
def test_a_skipped_nan_step_does_not_poison_the_method_state(name, make_model):
    # Run A: good, NaN (skipped), good, good. Run B: good, good, good. Same parameters after.
    def run(with_nan):
        model, x, y = make_model(2)
        opt = GradSurgery(
            torch.optim.SGD(model.parameters(), lr=0.05), method=_method(name, model, 2), nonfinite="skip"
        )
        schedule = [False, True, False, False] if with_nan else [False, False, False]
        for bad in schedule:
            opt.zero_grad()
            losses = model.losses(x, y)
            opt.backward(_nan_second(losses) if bad else losses)
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["uw", "gradnorm"])
def test_a_failed_construction_leaves_the_optimizer_unchanged(name, make_model):
    model, _, _ = make_model(2)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    groups = len(inner.param_groups)
    stray = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="shared: parameter 0"):
        GradSurgery(inner, method=_method(name, model, 2), shared=[stray])
    with pytest.raises(ValueError, match="reduction"):
        GradSurgery(inner, method=_method(name, model, 2), reduction="avg")
    assert len(inner.param_groups) == groups


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        opt.backward(model.losses(x, y))
        opt.step()


@pytest.mark.parametrize("name", ["pcgrad", "gradvac", "uw", "nash_mtl"])
def test_deepcopy_pickle_and_copy_of_the_wrapper(name, make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.Adam(model.parameters(), lr=1e-2), method=_method(name, model, 3))
    _train(model, opt, x, y, 2)
    shallow = copy.copy(opt)
    assert shallow.optimizer is opt.optimizer and shallow.method is opt.method
    # deepcopy of (model, optimizer) together keeps their parameters tied, as with torch optimizers.
    model2, opt2 = copy.deepcopy((model, opt))
    assert all(a is b for a, b in zip(model2.parameters(), (p for g in opt2.param_groups for p in g["params"])))
    _train(model, opt, x, y, 2)
    _train(model2, opt2, x, y, 2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    restored = pickle.loads(pickle.dumps(opt2))
    assert isinstance(restored, GradSurgery) and restored.method.name == name
    assert repr(restored.state_dict()["gradsurg"]) == repr(opt2.state_dict()["gradsurg"])


@pytest.mark.parametrize("name", ["cagrad", "nash_mtl", "mgda", "pcgrad", "graddrop", "mean"])
def test_one_task_stats_describe_what_was_applied(name, make_model):
    model, x, y = make_model(1)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name)
    stats = opt.backward(model.losses(x, y))
    expected = torch.autograd.grad(model.losses(x, y)[0], list(model.parameters()))
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g)
    # One task: nothing is shared, its gradient is applied with weight 1 and no Gram exists.
    assert stats.weights.tolist() == [1.0]
    assert stats.gram is None and stats.norms is None and stats.cosine is None
