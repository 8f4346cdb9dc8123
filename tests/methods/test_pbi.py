"""``pbi`` (gradsurg/methods/pbi.py): value and loss weights vs. the textbook PBI and finite
differences, the kink on the preference ray, the running-minimum ideal point, argument checks,
GradSurgery path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses
from textbook.pbi import pbi

from gradsurg.methods.pbi import PBI

F64 = torch.float64
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5], [-1.0, 2.0, 0.5]]


@pytest.mark.parametrize("values", LOSSES)
@pytest.mark.parametrize("theta", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("given", [False, True])
def test_matches_textbook(values, theta, given):
    T = len(values)
    pref = [1.0 + 0.5 * t for t in range(T)] if given else [1.0] * T
    ideal = [0.1 * t - 0.2 for t in range(T)] if given else None
    m = PBI(theta=theta, preference=pref if given else None, ideal=ideal)
    out, g = grad_wrt_losses(m, values)
    value, grad = pbi(values, pref, theta, ideal)
    torch.testing.assert_close(g, torch.tensor(grad, dtype=F64), rtol=1e-12, atol=1e-13)
    assert math.isclose(float(out), value, rel_tol=1e-12, abs_tol=1e-13)


def test_textbook_gradient_is_the_derivative():
    rng = np.random.default_rng(1)
    for _ in range(5):
        values, pref = rng.uniform(0.1, 3.0, 4).tolist(), rng.uniform(0.1, 1.0, 4).tolist()
        _, grad = pbi(values, pref, 5.0)
        for t in range(4):
            h = 1e-6
            up, down = list(values), list(values)
            up[t] += h
            down[t] -= h
            fd = (pbi(up, pref, 5.0)[0] - pbi(down, pref, 5.0)[0]) / (2 * h)
            assert abs(fd - grad[t]) < 1e-6


@pytest.mark.parametrize("values", [[2.0, 2.0, 2.0], [0.1, 0.1], [3.0], [1e-30, 1e-30], [1e30] * 4])
def test_on_the_ray_weights_are_the_direction(values):
    """L on the ray of w (equal losses, uniform w; always for one task): d₂ has its kink and the
    rounding noise of p must not pick a direction; the weights are ŵ."""
    T = len(values)
    out, g = grad_wrt_losses(PBI(theta=5.0), values)
    torch.testing.assert_close(g, torch.full((T,), 1 / math.sqrt(T), dtype=F64), rtol=1e-15, atol=0.0)
    assert math.isclose(float(out), sum(values) / math.sqrt(T), rel_tol=1e-12)


@pytest.mark.parametrize("scale", [1e-200, 1e-20, 1e20, 1e200])
def test_weights_depend_on_the_direction_only(scale):
    values = [0.5, 1.0, 2.0]
    _, g = grad_wrt_losses(PBI(), values)
    out, gs = grad_wrt_losses(PBI(), [scale * v for v in values])
    torch.testing.assert_close(gs, g, rtol=1e-12, atol=0.0)
    assert math.isclose(float(out), scale * pbi(values, [1.0] * 3, 5.0)[0], rel_tol=1e-12)


def test_running_min_ideal():
    m = PBI(theta=2.0, ideal="running_min")
    assert m.stateful and m.tied_to_num_tasks and m.positively_homogeneous and m.permutation_invariant
    _, g = grad_wrt_losses(m, [2.0, 3.0])  # z = L: f = 0, on the ray
    torch.testing.assert_close(g, torch.full((2,), 1 / math.sqrt(2), dtype=F64))
    m.objective(torch.tensor([3.0, 1.0], dtype=F64))
    torch.testing.assert_close(m.running_min, torch.tensor([2.0, 1.0], dtype=F64))
    _, g = grad_wrt_losses(m, [2.5, 2.0])  # z = (2, 1)
    torch.testing.assert_close(g, torch.tensor(pbi([2.5, 2.0], [1.0, 1.0], 2.0, [2.0, 1.0])[1], dtype=F64))
    state = m.state_dict()
    fresh = PBI(theta=2.0, ideal="running_min")
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.running_min, m.running_min)
    with pytest.raises(ValueError, match=r"^losses: "):
        m.objective(torch.ones(3))
    m.reset()
    assert m.running_min is None


def test_claims_follow_the_options():
    assert PBI().permutation_invariant and PBI().positively_homogeneous and not PBI().stateful
    assert not PBI(preference=[1.0, 2.0]).permutation_invariant
    fixed = PBI(ideal=[0.1, 0.2])
    assert not fixed.permutation_invariant and not fixed.positively_homogeneous


def test_preference_and_ideal_counts_are_checked():
    with pytest.raises(ValueError, match=r"^preference: "):
        PBI(preference=[1.0, 1.0]).objective(torch.ones(3))
    with pytest.raises(ValueError, match=r"^ideal: "):
        PBI(ideal=[0.0, 0.0]).objective(torch.ones(3))


@pytest.mark.parametrize(
    "make, argname",
    [
        (lambda: PBI(theta=-1.0), "theta"),
        (lambda: PBI(theta=float("nan")), "theta"),
        (lambda: PBI(preference=[0.0, 0.0]), "preference"),
        (lambda: PBI(preference=[1.0, -1.0]), "preference"),
        (lambda: PBI(ideal="nadir"), "ideal"),
        (lambda: PBI(ideal=[0.0, float("inf")]), "ideal"),
        (lambda: PBI(ideal=3), "ideal"),
    ],
)
def test_bad_constructor_arguments(make, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        make()


def test_end_to_end_grad_equals_hand_objective():
    def hand(L, net):
        u = 1 / math.sqrt(3)
        d1 = sum(v * u for v in L)
        d2 = torch.sqrt(sum((v - d1 * u) ** 2 for v in L))
        return d1 + 5.0 * d2

    check_first_step_is_hand_objective("pbi", hand)
