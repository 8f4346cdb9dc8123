"""``famo`` (gradsurg/methods/famo.py): gradient z/(c·D) by hand, the ξ update (SGD and Adam) by
hand, the explicit-update protocol, argument and loss checks, GradSurgery path."""

from __future__ import annotations

import math

import pytest
import torch
from _models import check_first_step_is_hand_objective, grad_wrt_losses, hand_softmax

from gradsurg.methods.famo import FAMO

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}  # float64 leaf losses: only rounding separates the two forms
LOSSES = [[1.0, 2.0, 3.0], [0.3, 0.3, 5.0, 0.01], [4.0, 0.5]]


@pytest.mark.parametrize("values", LOSSES)
@pytest.mark.parametrize("min_losses", [None, "half"])
def test_famo_gradient_is_z_over_c_d(values, min_losses):
    T = len(values)
    lower = [0.0] * T if min_losses is None else [v / 2 for v in values]
    m = FAMO(min_losses=None if min_losses is None else lower)
    m.xi = torch.tensor([0.2 * t - 0.1 for t in range(T)], dtype=F64)
    out, g = grad_wrt_losses(m, values)
    z = hand_softmax([0.2 * t - 0.1 for t in range(T)])
    d = [values[t] - lower[t] + 1e-8 for t in range(T)]
    c = sum(z[t] / d[t] for t in range(T))
    expected = torch.tensor([z[t] / (c * d[t]) for t in range(T)], dtype=F64)
    torch.testing.assert_close(g, expected, **TOL)
    assert math.isclose(float(out), sum(z[t] * math.log(d[t]) for t in range(T)) / c, rel_tol=1e-12)
    assert math.isclose(float(g.sum()), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_famo_xi_update_by_hand(optimizer):
    lr, gamma, eps = 0.1, 0.05, 1e-8
    m = FAMO(lr=lr, gamma=gamma, optimizer=optimizer)
    seq = [[1.0, 2.0, 3.0], [0.5, 1.9, 3.0], [0.45, 1.0, 2.0]]
    xi = [0.0, 0.0, 0.0]
    mom, vel = [0.0] * 3, [0.0] * 3
    grad_wrt_losses(m, seq[0])
    for k in (1, 2):
        delta = [math.log(seq[k - 1][t] + eps) - math.log(seq[k][t] + eps) for t in range(3)]
        z = hand_softmax(xi)
        # Jacobian of softmax, written as a full matrix: J_ij = z_i (δ_ij − z_j); d = Jᵀ δ
        d = [sum(z[i] * ((i == j) - z[j]) * delta[i] for i in range(3)) for j in range(3)]
        g = [d[t] + gamma * xi[t] for t in range(3)]
        if optimizer == "sgd":
            xi = [xi[t] - lr * g[t] for t in range(3)]
        else:
            mom = [0.9 * mom[t] + 0.1 * g[t] for t in range(3)]
            vel = [0.999 * vel[t] + 0.001 * g[t] ** 2 for t in range(3)]
            xi = [xi[t] - lr * (mom[t] / (1 - 0.9**k)) / (math.sqrt(vel[t] / (1 - 0.999**k)) + 1e-8)
                  for t in range(3)]
        _, got = grad_wrt_losses(m, seq[k])
        torch.testing.assert_close(m.xi, torch.tensor(xi, dtype=F64), rtol=1e-10, atol=1e-13)
        z = hand_softmax(xi)
        c = sum(z[t] / (seq[k][t] + eps) for t in range(3))
        torch.testing.assert_close(got, torch.tensor([z[t] / (c * (seq[k][t] + eps)) for t in range(3)],
                                                     dtype=F64), **TOL)
    # the task whose loss fell the most (in log) loses weight
    assert m.xi[0] < m.xi[2]


def test_famo_explicit_update_is_not_repeated():
    a, b = FAMO(optimizer="sgd"), FAMO(optimizer="sgd")
    first, after = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.5, 2.0], dtype=F64)
    a.objective(first)
    a.update(after)  # official protocol: post-step losses on the same batch
    xi = a.xi.clone()
    a.objective(torch.tensor([9.0, 9.0], dtype=F64))  # must not update again
    assert torch.equal(a.xi, xi)
    b.objective(first)
    b.objective(after)  # default: the next call's losses drive the update
    assert torch.equal(b.xi, xi)


@pytest.mark.parametrize(
    "make, argname",
    [
        (lambda: FAMO(lr=-1), "lr"),
        (lambda: FAMO(optimizer="rmsprop"), "optimizer"),
        (lambda: FAMO(min_losses=["a"]), "min_losses"),
    ],
)
def test_bad_constructor_arguments(make, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        make()


def test_bad_losses():
    with pytest.raises(ValueError, match=r"^losses: "):
        FAMO(min_losses=[2.0, 0.0]).objective(torch.tensor([1.0, 1.0]))


def test_end_to_end_grad_equals_hand_objective():
    def objective(L, net):  # ξ = 0: z uniform
        T = len(L)
        d = [float(x.detach()) + 1e-8 for x in L]
        c = sum((1 / T) / x for x in d)
        return sum((1 / T) * torch.log(L[t] + 1e-8) for t in range(T)) / c

    check_first_step_is_hand_objective("famo", objective)
