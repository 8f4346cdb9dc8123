"""``gls`` (gradsurg/methods/gls.py): the geometric mean and its gradient, loss checks (also
through GradSurgery, where nothing may be written), GradSurgery path."""

from __future__ import annotations

import math

import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses, make_net

from gradsurg import GradSurgery
from gradsurg.methods.gls import GLS

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}  # float64 leaf losses: only rounding separates the two forms
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5]]


@pytest.mark.parametrize("values", LOSSES)
def test_gls_gradient_is_geometric_mean_over_t_loss(values):
    T = len(values)
    out, g = grad_wrt_losses(GLS(), values)
    geo = math.prod(values) ** (1.0 / T)
    assert math.isclose(float(out), geo, rel_tol=1e-12)
    expected = torch.tensor([geo / (T * v) for v in values], dtype=F64)
    torch.testing.assert_close(g, expected, **TOL)


def test_bad_losses():
    with pytest.raises(ValueError, match=r"^losses: "):
        GLS().objective(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"^losses: "):
        GLS().objective(torch.tensor([1.0, -2.0]))
    # through GradSurgery: the error surfaces and nothing is written
    net, batches = make_net()
    opt = GradSurgery(torch.optim.SGD(net.parameters(), lr=0.1), method="gls")
    x, y = batches[0]
    losses = net.losses(x, y)
    with pytest.raises(ValueError, match=r"^losses: "):
        opt.backward([losses[0], losses[1] * 0.0, losses[2]])
    assert all(p.grad is None for p in net.parameters())


def test_end_to_end_grad_equals_hand_objective():
    def objective(L, net):
        return torch.exp(sum(torch.log(x) for x in L) / len(L))

    check_first_step_is_hand_objective("gls", objective)
