"""``rlw`` (gradsurg/methods/rlw.py): softmax of a seeded normal, reproducibility, GradSurgery path."""

from __future__ import annotations

import math

import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses, hand_softmax
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurg.methods.rlw import RLW

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}  # float64 leaf losses: only rounding separates the two forms
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5]]


@pytest.mark.parametrize("values", LOSSES)
def test_rlw_is_softmax_of_seeded_normal(values):
    T = len(values)
    _, g = grad_wrt_losses(RLW(seed=7), values)
    z = torch.randn(T, generator=torch.Generator().manual_seed(7), dtype=F64).tolist()
    expected = torch.tensor(hand_softmax(z), dtype=F64)
    torch.testing.assert_close(g, expected, **TOL)
    assert math.isclose(float(g.sum()), 1.0, rel_tol=1e-12)


def test_rlw_reproducible_by_seed_and_reset():
    a, b, c = RLW(seed=3), RLW(seed=3), RLW(seed=4)
    L = torch.ones(4, dtype=F64)
    wa = [a.loss_weights(L) for _ in range(3)]
    wb = [b.loss_weights(L) for _ in range(3)]
    for x, y in zip(wa, wb):
        assert torch.equal(x, y)
    assert not torch.equal(wa[0], wa[1])
    assert not torch.equal(wa[0], c.loss_weights(L))
    a.reset()
    assert torch.equal(a.loss_weights(L), wa[0])


@settings(max_examples=40, deadline=None)
@given(v=st.lists(st.floats(1e-4, 1e4, allow_nan=False), min_size=1, max_size=6), seed=st.integers(0, 2**31 - 1))
def test_rlw_single_call_any_t(v, seed):
    w = RLW(seed=seed).loss_weights(torch.tensor(v, dtype=F64))
    assert w.shape == (len(v),) and math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^seed: "):
        RLW(seed=1.5)


def test_end_to_end_grad_equals_hand_objective():
    def objective(L, net):  # the generator's first draw, seed 0
        z = torch.randn(len(L), generator=torch.Generator().manual_seed(0), dtype=F64)
        w = torch.exp(z) / torch.exp(z).sum()
        return sum(float(w[t]) * L[t] for t in range(len(L)))

    check_first_step_is_hand_objective("rlw", objective)
