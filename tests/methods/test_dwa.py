"""``dwa`` (gradsurg/methods/dwa.py): weights per step and per period by hand, new_epoch, state
left alone by failed and skipped steps, argument and loss checks, GradSurgery path."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses, hand_softmax, make_net, run

from gradsurg import GradSurgery
from gradsurg.methods.dwa import DWA

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}  # float64 leaf losses: only rounding separates the two forms


def test_dwa_history_per_step():
    m = DWA(temperature=2.0)
    seq = [[1.0, 2.0, 4.0], [0.5, 1.8, 4.0], [0.4, 1.0, 3.0], [0.2, 1.0, 3.3]]
    got = [grad_wrt_losses(m, v)[1] for v in seq]
    for k in (0, 1):
        torch.testing.assert_close(got[k], torch.ones(3, dtype=F64), **TOL)
    for k in (2, 3):
        r = [seq[k - 1][t] / seq[k - 2][t] for t in range(3)]
        expected = torch.tensor([3 * s for s in hand_softmax([x / 2.0 for x in r])], dtype=F64)
        torch.testing.assert_close(got[k], expected, **TOL)
        assert math.isclose(float(got[k].sum()), 3.0, rel_tol=1e-12)


def test_dwa_period_averages_and_new_epoch():
    seq = [[1.0, 2.0], [3.0, 2.0], [1.0, 1.0], [1.0, 3.0], [5.0, 5.0]]
    m = DWA(temperature=1.5, period=2)
    w = [m.loss_weights(torch.tensor(v, dtype=F64)) for v in seq]
    for k in range(4):
        torch.testing.assert_close(w[k], torch.ones(2, dtype=F64))
    mean0 = [(seq[0][t] + seq[1][t]) / 2 for t in range(2)]
    mean1 = [(seq[2][t] + seq[3][t]) / 2 for t in range(2)]
    expected = [2 * s for s in hand_softmax([mean1[t] / mean0[t] / 1.5 for t in range(2)])]
    torch.testing.assert_close(w[4], torch.tensor(expected, dtype=F64), **TOL)
    # period=None: epochs of any length end with new_epoch(); same averages, same weights.
    e = DWA(temperature=1.5, period=None)
    for k, v in enumerate(seq[:4]):
        torch.testing.assert_close(e.loss_weights(torch.tensor(v, dtype=F64)), torch.ones(2, dtype=F64))
        if k % 2 == 1:
            e.new_epoch()
    e.new_epoch()  # nothing since the last period: no-op
    torch.testing.assert_close(e.loss_weights(torch.tensor(seq[4], dtype=F64)), w[4], **TOL)
    e.reset()
    torch.testing.assert_close(e.loss_weights(torch.tensor(seq[4], dtype=F64)), torch.ones(2, dtype=F64))


def test_failed_step_leaves_state_unchanged():
    net, batches = make_net()
    m = DWA()
    opt = GradSurgery(torch.optim.SGD(net.parameters(), lr=0.1), method=m)
    run(opt, net, batches[:2])
    before = copy.deepcopy(m.get_extra_state())
    x, y = batches[2]
    losses = net.losses(x, y)
    losses[1] = losses[1] * float("nan")
    with pytest.raises(FloatingPointError):
        opt.backward(losses)
    after = m.get_extra_state()
    assert after["count"] == before["count"] and len(after["history"]) == len(before["history"])
    assert all(torch.equal(a, b) for a, b in zip(after["history"], before["history"]))


def test_skipped_step_leaves_state_unchanged():
    # (fixed in optim.py by 5b610f3; before it, DWA's history took the NaN losses for good)
    net, batches = make_net()
    m = DWA()
    opt = GradSurgery(torch.optim.SGD(net.parameters(), lr=0.1), method=m, nonfinite="skip")
    run(opt, net, batches[:2])
    x, y = batches[2]
    losses = net.losses(x, y)
    losses[1] = losses[1] * float("nan")
    assert opt.backward(losses).skipped
    assert all(bool(torch.isfinite(h).all()) for h in m.get_extra_state()["history"])


@pytest.mark.parametrize(
    "make, argname", [(lambda: DWA(temperature=0), "temperature"), (lambda: DWA(period=0), "period")]
)
def test_bad_constructor_arguments(make, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        make()


def test_bad_losses():
    d = DWA()
    d.objective(torch.ones(2))
    with pytest.raises(ValueError, match=r"^losses: "):
        d.objective(torch.ones(3))


def test_end_to_end_grad_equals_hand_objective():
    check_first_step_is_hand_objective("dwa", lambda L, net: sum(L))  # first period: weights 1
