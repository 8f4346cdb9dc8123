"""``uw`` (gradsurg/methods/uw.py): objective, effective weights and log-variance gradients by
hand, registration with the optimizer, argument and loss checks, GradSurgery path."""

from __future__ import annotations

import math

import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses, make_net

import gradsurg
from gradsurg import GradSurgery
from gradsurg.methods.uw import UW

F64 = torch.float64
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5]]


@pytest.mark.parametrize("values", LOSSES)
def test_uw_gradient_and_value(values):
    T = len(values)
    m = UW(num_tasks=T)
    s = [0.3 * t - 0.2 for t in range(T)]
    with torch.no_grad():
        m.log_vars.copy_(torch.tensor(s))
    out, g = grad_wrt_losses(m, values)
    s32 = m.log_vars.detach().tolist()  # the parameter is float32
    expected = torch.tensor([0.5 * math.exp(-v) for v in s32], dtype=F64)
    torch.testing.assert_close(g, expected, rtol=1e-6, atol=1e-9)
    value = sum(0.5 * math.exp(-s32[t]) * values[t] + 0.5 * s32[t] for t in range(T))
    assert math.isclose(float(out), value, rel_tol=1e-6)
    # ∂objective/∂s_t = ½ (1 − e^{−s_t} L_t)
    m.zero_grad()
    m.objective(torch.tensor(values, dtype=F64)).backward()
    expected_s = torch.tensor([0.5 * (1 - math.exp(-s32[t]) * values[t]) for t in range(T)])
    torch.testing.assert_close(m.log_vars.grad, expected_s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.last_weights, expected, rtol=1e-6, atol=1e-9)


def test_uw_parameters_registered_in_param_groups():
    net, _ = make_net()
    m = UW(num_tasks=3)
    base = torch.optim.SGD(net.parameters(), lr=0.1)
    opt = GradSurgery(base, method=m)
    assert len(base.param_groups) == 2
    assert base.param_groups[1]["params"][0] is m.log_vars
    # a multi-step run moves s
    _, batches = make_net()
    for x, y in batches[:3]:
        opt.zero_grad()
        opt.backward(net.losses(x, y))
        opt.step()
    assert not torch.equal(m.log_vars.detach(), torch.zeros(3))


@pytest.mark.parametrize(
    "make", [lambda: UW(), lambda: UW(num_tasks=0), lambda: gradsurg.get_method("uw")]
)
def test_bad_constructor_arguments(make):
    with pytest.raises(ValueError, match=r"^num_tasks: "):
        make()


def test_bad_losses():
    with pytest.raises(ValueError, match=r"^losses: "):
        UW(num_tasks=2).objective(torch.ones(3))


def test_end_to_end_grad_equals_hand_objective():
    method, opt, _ref, hand_L = check_first_step_is_hand_objective(
        "uw", lambda L, net: sum(0.5 * L[t] for t in range(len(L)))  # s = 0
    )
    own = list(method.parameters())
    assert len(own) == 1 and own[0].grad is not None
    assert any(own[0] is q for g in opt.param_groups for q in g["params"])
    # ∂/∂s_t at s = 0: ½ (1 − L_t)
    expected = torch.tensor([0.5 * (1 - float(v.detach())) for v in hand_L])
    torch.testing.assert_close(method.log_vars.grad, expected, rtol=1e-5, atol=1e-7)
