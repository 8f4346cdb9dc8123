"""Grouped surgery, groups=: an independent Gram, weights and combination per parameter group."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery


def _per_task_grads(model, x, y, params):
    rows = []
    for t in range(len(model.heads)):
        grads = torch.autograd.grad(model.losses(x, y)[t], params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("name", ["mgda", "upgrad", "imtl_g"])
def test_each_group_is_its_own_surgery(name, make_model):
    model, x, y = make_model(3)
    layers = [list(model.trunk[0].parameters()), list(model.trunk[2].parameters())]
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name, groups=layers)
    stats = opt.backward(model.losses(x, y))
    assert stats.group_weights.shape == (2, 3) and torch.isnan(stats.weights).all()
    for g, params in enumerate(layers):
        J = _per_task_grads(model, x, y, params)
        expected = gradsurg.aggregate(J.double(), name, backend="torch")
        got = torch.cat([p.grad.reshape(-1) for p in params]).double()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(stats.group_weights[g], gradsurg.get_method(name).weights(J.double() @ J.double().T))


def test_parameter_groups_and_one_group_equals_plain_surgery(make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    one = GradSurgery(
        torch.optim.SGD(model.parameters(), lr=0.1), method="mgda", groups=[list(model.trunk.parameters())]
    )
    one.backward(model.losses(x, y))
    plain = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method="mgda")
    plain.backward(twin.losses(x, y))
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    per_param = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="mgda", groups="parameter")
    model.zero_grad()
    stats = per_param.backward(model.losses(x, y))
    assert stats.group_weights.shape == (4, 3)  # the trunk's two weights and two biases


def test_stateful_group_methods_resume_exactly(make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)

    def make(m):
        return GradSurgery(torch.optim.SGD(m.parameters(), lr=0.05), method="gradvac", groups="parameter")

    a, b = make(model), make(twin)
    for opt, m in ((a, model), (b, twin)):
        for _ in range(2):
            opt.zero_grad()
            opt.backward(m.losses(x, y))
            opt.step()
    b2 = make(twin)
    b2.load_state_dict(b.state_dict())
    for opt, m in ((a, model), (b2, twin)):
        for _ in range(2):
            opt.zero_grad()
            opt.backward(m.losses(x, y))
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_groups_argument_is_checked(make_model):
    model, _, _ = make_model(2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="groups: graddrop is not a Gram method"):
        GradSurgery(sgd, method="graddrop", groups="parameter")
    with pytest.raises(ValueError, match="groups: group 0 is empty"):
        GradSurgery(sgd, method="mgda", groups=[[]])
    with pytest.raises(ValueError, match="in an earlier group too"):
        GradSurgery(sgd, method="mgda", groups=[[model.trunk[0].weight], [model.trunk[0].weight]])
    with pytest.raises(ValueError, match="groups: refresh_every"):
        GradSurgery(sgd, method="mgda", groups="parameter", refresh_every=2)
