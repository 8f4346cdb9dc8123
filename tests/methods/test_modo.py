"""``modo`` (gradsurg/methods/modo.py): the λ sequence vs. the textbook MoDo step on explicit
vectors (with a bisection simplex projection), the projection itself, the paper's cross-batch
G = J₁J₂ᵀ, extreme scales, state, argument checks, GradSurgery path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _families import FAMILIES, TS, gram, make_family
from _models import check_end_to_end
from textbook.modo import modo, modo_step, simplex_projection

import gradsurg
from gradsurg.methods.modo import MoDo, project_onto_simplex

F64 = torch.float64


def _tol(Js, gamma: float) -> float:
    # λ lives on the simplex; the projected point has entries of size ~γ·max|G|
    return 1e-12 * max(1.0, gamma * max(float(gram(J).abs().max()) for J in Js))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("gamma, rho", [(0.1, 0.1), (1e-3, 0.0), (0.02, 1.0)])
def test_matches_textbook_over_steps(family, T, gamma, rho):
    Js = [make_family(family, T, extra=e) for e in range(4)]
    m = MoDo(gamma=gamma, rho=rho)
    expected = modo(Js, gamma, rho)
    for step, (J, want) in enumerate(zip(Js, expected)):
        w = m.weights(gram(J))
        torch.testing.assert_close(w, torch.tensor(want, dtype=F64), rtol=0.0, atol=_tol(Js, gamma),
                                   msg=lambda msg, step=step: f"step {step}\n{msg}")
        assert abs(float(w.sum()) - 1.0) <= 1e-12 and bool((w >= 0).all())


def test_cross_batch_gram():
    """Called directly with the paper's G = J₁J₂ᵀ of two batches (not symmetric)."""
    rng = np.random.default_rng(3)
    J1, J2 = torch.from_numpy(rng.standard_normal((4, 9))), torch.from_numpy(rng.standard_normal((4, 9)))
    m = MoDo(gamma=0.05, rho=0.1)
    lam = [0.25] * 4
    for _ in range(3):
        lam = modo_step(J1, J2, lam, 0.05, 0.1)
        torch.testing.assert_close(m.weights(J1 @ J2.T), torch.tensor(lam, dtype=F64), rtol=0.0, atol=1e-13)


@pytest.mark.parametrize("T", [1, 2, 3, 7])
def test_projection_vs_bisection(T):
    rng = np.random.default_rng(T)
    for scale in (1e-3, 1.0, 1e3):
        y = torch.from_numpy(rng.standard_normal(T) * scale)
        x = project_onto_simplex(y)
        torch.testing.assert_close(x, torch.tensor(simplex_projection(y.tolist()), dtype=F64), rtol=0.0,
                                   atol=1e-12 * max(1.0, scale))
        assert abs(float(x.sum()) - 1.0) <= 1e-12 and bool((x >= 0).all())
        torch.testing.assert_close(project_onto_simplex(x), x, rtol=0.0, atol=1e-15)  # a projection


def test_projection_resolves_huge_entries():
    """y − max(y) first: with entries ~1e60 the 1 of the simplex is not lost to rounding."""
    y = torch.tensor([-1e60, -3e60, -2e60], dtype=F64)
    assert torch.equal(project_onto_simplex(y), torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    J = torch.tensor([[1e30, 0.0], [0.0, 3e30], [1e29, 1e29]], dtype=F64)
    w = MoDo().weights(gram(J))
    assert abs(float(w.sum()) - 1.0) <= 1e-12 and bool(torch.isfinite(w).all())


def test_zero_gradients_keep_the_uniform_weights():
    w = MoDo().weights(torch.zeros(3, 3, dtype=F64))
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=F64), rtol=0.0, atol=1e-16)


def test_state_round_trip_reset_and_task_count():
    Js = [make_family("random", 3, extra=e) for e in range(4)]
    a = MoDo(gamma=0.01)
    for J in Js[:2]:
        a.weights(gram(J))
    b = MoDo(gamma=0.01)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for J in Js[2:]:
        assert torch.equal(a.weights(gram(J)), b.weights(gram(J)))
    with pytest.raises(ValueError, match=r"^losses: "):
        a.weights(gram(make_family("random", 4)))
    a.reset()
    assert torch.equal(a.weights(gram(Js[0])), MoDo(gamma=0.01).weights(gram(Js[0])))


@pytest.mark.parametrize(
    "kwargs, argname",
    [({"gamma": 0.0}, "gamma"), ({"gamma": float("inf")}, "gamma"), ({"gamma": True}, "gamma"),
     ({"rho": -0.1}, "rho"), ({"rho": float("nan")}, "rho")],
)
def test_bad_constructor_arguments(kwargs, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        gradsurg.get_method("modo", **kwargs)


def test_end_to_end_gradsurgery():
    def expected(Js, Ls, method):
        lam = modo(Js, 0.1, 0.1)[-1]
        return torch.tensor(lam, dtype=F64) @ Js[-1], 1e-10 * float(Js[-1].norm(dim=1).max())

    check_end_to_end("modo", expected)
