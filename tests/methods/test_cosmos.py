"""``cosmos`` (gradsurg/methods/cosmos.py): value and loss weights vs. the textbook COSMOS
objective and finite differences, exactness at tiny and huge loss scales, the settable
preference, argument checks, GradSurgery path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses
from textbook.cosmos import cosmos

from gradsurg.methods.cosmos import COSMOS

F64 = torch.float64
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5], [7.0], [-1.0, 2.0, 0.5]]


def _pref(T: int) -> list[float]:
    return [1.0 + 0.5 * t for t in range(T)]


@pytest.mark.parametrize("values", LOSSES)
@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0, 8.0])
@pytest.mark.parametrize("uniform", [True, False])
def test_matches_textbook(values, lam, uniform):
    T = len(values)
    pref = [1.0 / T] * T if uniform else _pref(T)
    m = COSMOS(lam=lam, preference=None if uniform else pref)
    out, g = grad_wrt_losses(m, values)
    value, grad = cosmos(values, pref, lam)
    torch.testing.assert_close(g, torch.tensor(grad, dtype=F64), rtol=1e-12, atol=1e-14)
    assert math.isclose(float(out), value, rel_tol=1e-12, abs_tol=1e-14)


def test_textbook_gradient_is_the_derivative():
    """The oracle's quotient-rule gradient against central differences of its value."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        values, pref = rng.uniform(0.1, 3.0, 4).tolist(), rng.uniform(0.1, 1.0, 4).tolist()
        _, grad = cosmos(values, pref, 1.7)
        for t in range(4):
            h = 1e-6
            up, down = list(values), list(values)
            up[t] += h
            down[t] -= h
            fd = (cosmos(up, pref, 1.7)[0] - cosmos(down, pref, 1.7)[0]) / (2 * h)
            assert abs(fd - grad[t]) < 1e-7


@pytest.mark.parametrize("scale", [1e-200, 1e-20, 1e20, 1e200])
def test_exact_at_every_scale(scale):
    """The cosine is scale-free and computed without overflow or underflow (‖L‖² would leave the
    float64 range at 1e±200): the weights at sL are r + (w(L) − r)/s."""
    values = [0.5, 1.0, 2.0]
    m = COSMOS(lam=2.0)
    _, g = grad_wrt_losses(m, values)
    _, gs = grad_wrt_losses(m, [scale * v for v in values])
    r = torch.full((3,), 1.0 / 3, dtype=F64)
    torch.testing.assert_close(gs, r + (g - r) / scale, rtol=1e-12, atol=0.0)


def test_zero_losses_have_no_direction():
    out, g = grad_wrt_losses(COSMOS(lam=3.0), [0.0, 0.0])
    assert float(out) == 0.0
    torch.testing.assert_close(g, torch.tensor([0.5, 0.5], dtype=F64))


def test_lam_zero_is_the_linear_scalarisation_and_claims():
    m = COSMOS(lam=0.0, preference=[0.2, 0.8])
    _, g = grad_wrt_losses(m, [3.0, 4.0])
    torch.testing.assert_close(g, torch.tensor([0.2, 0.8], dtype=F64))
    assert m.positively_homogeneous and m.linear_under_scaling and not m.permutation_invariant
    d = COSMOS()
    assert d.permutation_invariant and not d.positively_homogeneous and not d.linear_under_scaling


def test_preference_is_settable_and_checked():
    m = COSMOS(lam=1.0)
    m.preference = torch.tensor([0.3, 0.7])  # as the paper redraws r every batch
    _, g = grad_wrt_losses(m, [1.0, 2.0])
    torch.testing.assert_close(g, torch.tensor(cosmos([1.0, 2.0], [0.3, 0.7], 1.0)[1], dtype=F64))
    with pytest.raises(ValueError, match=r"^preference: "):
        m.objective(torch.ones(3))
    with pytest.raises(ValueError, match=r"^preference: "):
        m.preference = [0.5, -0.5]
    m.preference = None
    _, g = grad_wrt_losses(m, [1.0, 2.0, 3.0])
    torch.testing.assert_close(g, torch.tensor(cosmos([1.0, 2.0, 3.0], [1 / 3] * 3, 1.0)[1], dtype=F64))


@pytest.mark.parametrize(
    "make, argname",
    [
        (lambda: COSMOS(lam=-1.0), "lam"),
        (lambda: COSMOS(lam=float("inf")), "lam"),
        (lambda: COSMOS(lam=True), "lam"),
        (lambda: COSMOS(preference=[0.0, 0.0]), "preference"),
        (lambda: COSMOS(preference=[]), "preference"),
        (lambda: COSMOS(preference=[1.0, float("nan")]), "preference"),
        (lambda: COSMOS(preference="ab"), "preference"),
    ],
)
def test_bad_constructor_arguments(make, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        make()


def test_end_to_end_grad_equals_hand_objective():
    def hand(L, net):
        linear = sum(v / 3 for v in L)
        norm_l = torch.sqrt(sum(v * v for v in L))
        return linear - 1.0 * linear / (math.sqrt(3) / 3 * norm_l)

    check_first_step_is_hand_objective("cosmos", hand)
