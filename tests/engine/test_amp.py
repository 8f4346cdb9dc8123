"""torch.amp: GradScaler cooperation. Every method's update equals the unscaled fp32 update;
on overflow the scaler skips the step and backs off exactly as with plain PyTorch."""

from __future__ import annotations

import copy

import pytest
import torch
from _stack_methods import build

import gradsurg
from gradsurg import GradSurgery

ALL = gradsurg.available_methods()


def _method(name, model, num_tasks=2):
    return build(name, model, num_tasks)


def _scaler(scale=2.0**16):
    return torch.amp.GradScaler("cpu", init_scale=scale)


@pytest.mark.parametrize("name", ALL)
def test_scaled_step_equals_the_unscaled_fp32_step(name, make_model):
    model, x, y = make_model(2)
    twin = copy.deepcopy(model)
    plain = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method=_method(name, model))
    scaler = _scaler()
    amp = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.05), method=_method(name, twin), scaler=scaler)
    for _ in range(3):
        plain.zero_grad()
        expected = plain.backward(model.losses(x, y))
        plain.step()
        amp.zero_grad()
        stats = amp.backward([scaler.scale(v) for v in twin.losses(x, y)])
        scaler.step(amp)
        scaler.update()
        # The methods saw the unscaled losses and Gram.
        torch.testing.assert_close(stats.losses, expected.losses)
        if expected.gram is not None:
            torch.testing.assert_close(stats.gram, expected.gram, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(stats.weights, expected.weights, rtol=1e-4, atol=1e-7, equal_nan=True)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["pcgrad", "nash_mtl", "fairgrad", "db_mtl", "famo", "cosreg"])
def test_overflow_skips_and_backs_off_exactly_as_plain_pytorch(name, make_model):
    model, x, y = make_model(2)
    twin = copy.deepcopy(model)
    huge = 1e34  # × the scale 2^16 overflows float32 in the backward pass

    def losses(m):
        ls = m.losses(x, y)
        return [ls[0], ls[1] * huge]

    plain_scaler, amp_scaler = _scaler(), _scaler()
    plain_opt = torch.optim.SGD(model.parameters(), lr=0.05)
    plain_scaler.scale(sum(losses(model))).backward()
    plain_scaler.step(plain_opt)
    plain_scaler.update()

    amp = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.05), method=_method(name, twin), scaler=amp_scaler)
    method_state = repr(amp.state_dict()["gradsurg"])
    stats = amp.backward([amp_scaler.scale(v) for v in losses(twin)])
    amp_scaler.step(amp)
    amp_scaler.update()
    assert stats.skipped
    assert amp_scaler.get_scale() == plain_scaler.get_scale() == 2.0**15
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)  # neither stepped
    assert repr(amp.state_dict()["gradsurg"]) == method_state


def test_nonfinite_raise_does_not_fight_the_scaler(make_model):
    model, x, y = make_model(2)
    scaler = _scaler()
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="pcgrad", scaler=scaler, nonfinite="raise")
    ls = model.losses(x, y)
    opt.backward([scaler.scale(ls[0]), scaler.scale(ls[1] * 1e34)])  # no FloatingPointError
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**15
    # The next, finite step goes through.
    opt.zero_grad()
    stats = opt.backward([scaler.scale(v) for v in model.losses(x, y)])
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(opt)
    assert not stats.skipped and not torch.equal(before[0], model.trunk[0].weight)


def test_bf16_autocast_runs_and_is_close_to_fp32(make_model):
    model, x, y = make_model(2)
    twin = copy.deepcopy(model)
    ref = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="upgrad")
    ref.backward(model.losses(x, y))
    opt = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.05), method="upgrad")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = twin.losses(x, y)
    opt.backward([v.float() for v in losses])
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0.05, atol=0.02)


def test_scaler_argument_is_checked(make_model):
    model, _, _ = make_model(2)
    with pytest.raises(TypeError, match=r"scaler: expected a torch\.amp\.GradScaler, got float"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), scaler=1.0)
