"""Per-task state follows the task's name when losses come as a dict in another order."""

from __future__ import annotations

import copy

import pytest
import torch
from _stack_methods import build

import gradsurg
from gradsurg import GradSurgery

# Every method, with the options that make it keep per-task state where it has them.
STATEFUL = gradsurg.available_methods()


def _method(name, model):
    return build(name, model, 3, stateful=True)


@pytest.mark.parametrize("name", STATEFUL)
def test_dict_order_does_not_move_state_between_tasks(name, make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    opts = [GradSurgery(torch.optim.SGD(m.parameters(), lr=0.05), method=_method(name, m)) for m in (model, twin)]
    orders = [("a", "b", "c"), ("c", "a", "b"), ("b", "c", "a"), ("a", "c", "b")]
    for order in orders:
        for m, opt, keys in ((model, opts[0], ("a", "b", "c")), (twin, opts[1], order)):
            losses = dict(zip(("a", "b", "c"), m.losses(x, y)))
            opt.zero_grad()
            stats = opt.backward({k: losses[k] for k in keys})
            opt.step()
            assert stats.task_names == ("a", "b", "c")
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_changed_task_set_is_an_error_for_task_shaped_state(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="dwa")
    losses = model.losses(x, y)
    opt.backward({"a": losses[0], "b": losses[1], "c": losses[2]})
    losses = model.losses(x, y)
    with pytest.raises(
        ValueError, match=r"losses: DWA is stateful and its state belongs to the tasks \['a', 'b', 'c'\]"
    ):
        opt.backward({"a": losses[0], "b": losses[1], "d": losses[2]})
    # A stateless method takes any tasks.
    free = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="mgda")
    free.backward({"a": losses[0], "b": losses[1]})
    losses = model.losses(x, y)
    free.backward({"x": losses[0], "y": losses[2]})


def test_task_names_survive_a_checkpoint(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="dwa")
    losses = model.losses(x, y)
    opt.backward({"a": losses[0], "b": losses[1], "c": losses[2]})
    opt.step()
    fresh = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="dwa")
    fresh.load_state_dict(opt.state_dict())
    losses = model.losses(x, y)
    stats = fresh.backward({"c": losses[2], "a": losses[0], "b": losses[1]})
    assert stats.task_names == ("a", "b", "c")
