"""The plan stage: which parameters each loss reaches, the shared set, refusals."""

from __future__ import annotations

import pytest
import torch

from gradsurg._engine.plan import plan_step, trainable_parameters


def test_plan_finds_the_parameters_two_losses_reach(make_model):
    model, x, y = make_model(3)
    params = trainable_parameters([{"params": list(model.parameters())}])
    plan = plan_step({"a": model.losses(x, y)[0], "b": model.losses(x, y)[1]}, None, params, None)
    trunk = {id(p) for p in model.trunk.parameters()}
    assert plan.names == ["a", "b"] and plan.alphas == [1.0, 1.0]
    assert {id(p) for p in plan.shared} == trunk
    # Each loss reaches the trunk and its own head only.
    head0 = {id(p) for p in model.heads[0].parameters()}
    assert {id(params[k]) for k in plan.reached[0]} == trunk | head0


def test_plan_with_declared_shared_gives_every_task_the_shared_set(make_model):
    model, x, y = make_model(2)
    params = list(model.parameters())
    shared = [model.heads[0].weight]  # reached by task 0 only
    plan = plan_step(model.losses(x, y), [2.0, 0.5], params, shared)
    k = [id(p) for p in params].index(id(model.heads[0].weight))
    assert plan.shared_idx == [k]
    assert all(k in r for r in plan.reached)
    assert plan.alphas == [2.0, 0.5]


def test_plan_refuses_a_loss_that_reaches_nothing(make_model):
    model, x, y = make_model(2)
    stray = torch.nn.Parameter(torch.ones(()))
    with pytest.raises(ValueError, match=r"losses\['1'\]: reaches none"):
        plan_step([model.losses(x, y)[0], stray * 2], None, list(model.parameters()), None)
