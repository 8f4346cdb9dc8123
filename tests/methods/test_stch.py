"""``stch`` (gradsurg/methods/stch.py): gradient = preference × softmax of the scaled gaps, the
running-min ideal point, argument checks, GradSurgery path."""

from __future__ import annotations

import math

import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses, hand_softmax

from gradsurg.methods.stch import STCH

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}  # float64 leaf losses: only rounding separates the two forms
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5]]


@pytest.mark.parametrize("values", LOSSES)
@pytest.mark.parametrize("mu", [0.1, 1.0, 3.0])
def test_stch_gradient_is_softmax_of_scaled_gaps(values, mu):
    T = len(values)
    pref = [1.0 + 0.5 * t for t in range(T)]
    ideal = [0.1 * t for t in range(T)]
    out, g = grad_wrt_losses(STCH(mu=mu, ideal=ideal, preference=pref), values)
    a = [pref[t] * (values[t] - ideal[t]) / mu for t in range(T)]
    s = hand_softmax(a)
    expected = torch.tensor([pref[t] * s[t] for t in range(T)], dtype=F64)
    torch.testing.assert_close(g, expected, **TOL)
    m = max(a)
    assert math.isclose(float(out), mu * (m + math.log(sum(math.exp(x - m) for x in a))), rel_tol=1e-12)
    # Plain form: weights sum to 1 and μ → 0 approaches the max.
    _, g1 = grad_wrt_losses(STCH(mu=mu), values)
    assert math.isclose(float(g1.sum()), 1.0, rel_tol=1e-12)
    out0, _ = grad_wrt_losses(STCH(mu=1e-4), values)
    assert abs(float(out0) - max(values)) < 1e-3


def test_stch_running_min_ideal():
    m = STCH(mu=0.5, ideal="running_min")
    m.objective(torch.tensor([2.0, 3.0], dtype=F64))
    m.objective(torch.tensor([3.0, 1.0], dtype=F64))
    torch.testing.assert_close(m.running_min, torch.tensor([2.0, 1.0], dtype=F64))
    _, g = grad_wrt_losses(m, [2.5, 2.0])  # z = (2, 1): gaps (0.5, 1.0)
    expected = torch.tensor(hand_softmax([0.5 / 0.5, 1.0 / 0.5]), dtype=F64)
    torch.testing.assert_close(g, expected, **TOL)


@pytest.mark.parametrize(
    "make, argname",
    [
        (lambda: STCH(mu=0), "mu"),
        (lambda: STCH(ideal="nadir"), "ideal"),
        (lambda: STCH(preference=[1.0, -1.0]), "preference"),
    ],
)
def test_bad_constructor_arguments(make, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        make()


def test_bad_losses():
    with pytest.raises(ValueError, match=r"^ideal: "):
        STCH(ideal=[0.0, 0.0]).objective(torch.ones(3))


def test_end_to_end_grad_equals_hand_objective():
    def objective(L, net):  # running min of the first call is the losses themselves: gaps 0
        return 0.5 * torch.log(sum(torch.exp((L[t] - L[t].detach()) / 0.5) for t in range(len(L))))

    check_first_step_is_hand_objective("stch", objective)
