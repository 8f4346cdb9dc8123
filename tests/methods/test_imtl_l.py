"""``imtl_l`` (gradsurg/methods/imtl_l.py): objective, loss weights and log-scale gradients vs. the
textbook IMTL-L, registration with the optimizer, the relation to ``uw``, argument and loss checks,
GradSurgery path and checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
from _models import grad_wrt_losses, make_net
from textbook.imtl_l import imtl_l

import gradsurg
from gradsurg import GradSurgery
from gradsurg.methods.imtl_l import IMTLL
from gradsurg.methods.uw import UW

F64 = torch.float64
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5], [7.0]]


def _with_scales(T: int) -> IMTLL:
    m = IMTLL(num_tasks=T)
    with torch.no_grad():
        m.log_scales.copy_(torch.tensor([0.4 * t - 0.3 for t in range(T)]))
    return m


@pytest.mark.parametrize("values", LOSSES)
def test_matches_textbook(values):
    T = len(values)
    m = _with_scales(T)
    out, g = grad_wrt_losses(m, values)
    s = m.log_scales.detach().double().tolist()  # the parameter is float32: use its exact values
    value, d_losses, d_scales = imtl_l(values, s)
    torch.testing.assert_close(g, torch.tensor(d_losses, dtype=F64), rtol=1e-6, atol=0.0)
    assert abs(float(out) - value) <= 1e-6 * max(1.0, abs(value))
    m.zero_grad()
    m.objective(torch.tensor(values, dtype=F64)).backward()
    torch.testing.assert_close(m.log_scales.grad, torch.tensor(d_scales, dtype=torch.float32), rtol=1e-5, atol=1e-6)


def test_is_twice_uw_at_negated_parameter():
    # Σ (e^s L − s) = 2 Σ (½ e^{−(−s)} L + ½ (−s)): the same weighting as uw up to 2 and a sign
    values = torch.tensor([0.7, 2.0, 5.0], dtype=F64)
    m, u = _with_scales(3), UW(num_tasks=3)
    with torch.no_grad():
        u.log_vars.copy_(-m.log_scales)
    torch.testing.assert_close(m.objective(values), 2 * u.objective(values), rtol=1e-6, atol=1e-7)


def test_starts_as_the_plain_sum_and_init():
    values = torch.tensor([1.5, 0.2], dtype=F64)
    assert float(IMTLL(num_tasks=2).objective(values).detach()) == pytest.approx(1.7)
    m = IMTLL(num_tasks=2, init=0.5)
    value, d_losses, _ = imtl_l(values.tolist(), [0.5, 0.5])
    assert float(m.objective(values).detach()) == pytest.approx(value, rel=1e-6)
    torch.testing.assert_close(m.last_weights, torch.tensor(d_losses, dtype=F64), rtol=1e-6, atol=0.0)


def test_scales_balance_the_losses():
    """Minimising over s alone drives every scaled loss e^{s_t} L_t to 1 (the paper's balance)."""
    m = IMTLL(num_tasks=3)
    values = torch.tensor([0.01, 1.0, 100.0])
    opt = torch.optim.SGD(m.parameters(), lr=0.005)
    for _ in range(4000):
        opt.zero_grad()
        m.objective(values).backward()
        opt.step()
    torch.testing.assert_close(torch.exp(m.log_scales.detach()) * values, torch.ones(3), rtol=1e-3, atol=0.0)


def test_end_to_end_first_step_and_registration():
    net, batches = make_net()
    ref = copy.deepcopy(net)
    method = gradsurg.methods.build_method("imtl_l", num_tasks=3)
    base = torch.optim.SGD(net.parameters(), lr=0.1)
    opt = GradSurgery(base, method=method)
    assert len(base.param_groups) == 2 and base.param_groups[1]["params"][0] is method.log_scales
    x, y = batches[0]
    stats = opt.backward(net.losses(x, y))
    hand_losses = ref.losses(x, y)
    grads = torch.autograd.grad(sum(hand_losses), list(ref.parameters()))  # s = 0: the plain sum
    for (pname, p), g in zip(net.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7, msg=pname)
    expected_s = torch.tensor([float(v.detach()) - 1.0 for v in hand_losses])  # e^0 L − 1
    torch.testing.assert_close(method.log_scales.grad, expected_s, rtol=1e-5, atol=1e-7)
    assert stats.method == "imtl_l" and stats.gram is None
    torch.testing.assert_close(stats.weights.to(F64), torch.ones(3, dtype=F64))
    opt.step()
    for x, y in batches[1:3]:
        opt.zero_grad()
        opt.backward(net.losses(x, y))
        opt.step()
    assert not torch.equal(method.log_scales.detach(), torch.zeros(3))


def test_state_dict_carries_the_scales():
    a = _with_scales(3)
    b = IMTLL(num_tasks=3)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert torch.equal(a.log_scales, b.log_scales)
    values = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(a.objective(values), b.objective(values))
    b.reset()  # parameters are not method state
    assert torch.equal(a.log_scales, b.log_scales)


@pytest.mark.parametrize(
    "make, argname",
    [
        (lambda: IMTLL(), "num_tasks"),
        (lambda: IMTLL(num_tasks=0), "num_tasks"),
        (lambda: IMTLL(num_tasks=2.0), "num_tasks"),
        (lambda: gradsurg.get_method("imtl_l"), "num_tasks"),
        (lambda: IMTLL(num_tasks=2, init=float("inf")), "init"),
        (lambda: IMTLL(num_tasks=2, init="0"), "init"),
    ],
)
def test_bad_constructor_arguments(make, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        make()


def test_bad_losses():
    with pytest.raises(ValueError, match=r"^losses: "):
        IMTLL(num_tasks=2).objective(torch.ones(3))
