"""``cagrad`` (gradsurg/methods/cagrad.py) vs. the textbook CAGrad (the paper's dual solved by
SLSQP on explicit vectors), the oracle itself vs. the primal problem, and regressions.

Tolerance 1e-5·scale (scale = T·max‖g_t‖): the textbook side is an iterative SLSQP solve (the
paper's solver), which is verified separately against a primal SLSQP solve to ~1e-7; 1e-5
leaves a wide margin for the solver while still catching any formula error (those are O(1)).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from _assertions import close, lib_weights
from _families import FAMILIES, TS, make_family, nmax, num_params, scale_of
from scipy.optimize import minimize
from textbook.cagrad import cagrad, cagrad_direction

import gradsurg

F64 = torch.float64


def _cagrad_primal(J: torch.Tensor, c: float) -> torch.Tensor:
    """CAGrad primal (Liu et al. 2021, eq. 4): max_d min_i g_i·d  s.t. ‖d − g0‖ ≤ c‖g0‖."""
    Jn = J.numpy()
    T, P = Jn.shape
    g0 = Jn.mean(0)
    r = c * np.linalg.norm(g0)
    cons = [
        {
            "type": "ineq",
            "fun": lambda x: Jn @ x[:P] - x[P],
            "jac": lambda x: np.hstack([Jn, -np.ones((T, 1))]),
        },
        {
            "type": "ineq",
            "fun": lambda x: r * r - np.sum((x[:P] - g0) ** 2),
            "jac": lambda x: np.concatenate([-2 * (x[:P] - g0), [0.0]]),
        },
    ]
    x0 = np.concatenate([g0, [(Jn @ g0).min()]])
    res = minimize(
        lambda x: -x[P],
        x0,
        jac=lambda x: np.concatenate([np.zeros(P), [-1.0]]),
        method="SLSQP",
        constraints=cons,
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return torch.from_numpy(res.x[:P])


@pytest.mark.parametrize("family", ["random", "conflicting", "orthogonal"])
@pytest.mark.parametrize("T", [2, 3, 5])
def test_textbook_cagrad_dual_matches_primal(family, T):
    # The dual solution d = g0 + c'/‖g_w‖ g_w must solve the primal problem; two different
    # SLSQP formulations agreeing to 1e-7 is the evidence that the oracle is accurate enough
    # for the 1e-5 tolerance used against the library.
    J = make_family(family, T)
    close(cagrad(J, 0.4, rescale=0), _cagrad_primal(J, 0.4), 1e-7 * scale_of(J))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_cagrad_default(family, T):
    J = make_family(family, T)
    close(lib_weights("cagrad", J) @ J, cagrad(J, 0.4, 1), 1e-5 * scale_of(J))


@pytest.mark.parametrize("rescale", [0, 1, 2])
@pytest.mark.parametrize("c", [0.2, 0.4, 0.8])
@pytest.mark.parametrize("family", ["random", "conflicting"])
@pytest.mark.parametrize("T", [2, 5])
def test_cagrad_params(rescale, c, family, T):
    J = make_family(family, T, extra=3)
    close(
        lib_weights("cagrad", J, c=c, rescale=rescale) @ J,
        cagrad(J, c, rescale),
        1e-5 * scale_of(J),
    )


@pytest.mark.parametrize("T", [3, 5, 8])
def test_cagrad_zero_row_nondegenerate(T):
    # The "one_zero" family above always has its CAGrad dual optimum at g_w* = 0 (d = π_C(g0)).
    # Here a zero task coexists with a task strongly opposed to the mean, so the optimum is a
    # nonzero g_w* even though 0 is a vertex of the hull: the library must not short-cut to g0.
    rng = np.random.default_rng(77 + T)
    P = num_params(T)
    v = rng.standard_normal(P)
    J = 0.3 * rng.standard_normal((T, P))
    J[0] = 3.0 * v
    J[1] = -1.0 * v + 0.1 * rng.standard_normal(P)
    J[2] = 0.0
    J = torch.from_numpy(J)
    _, _gw, val = cagrad_direction(J, 0.4)
    assert val < -1e-3 * float(torch.linalg.vector_norm(J, dim=1).max()) ** 2  # non-degenerate
    close(lib_weights("cagrad", J) @ J, cagrad(J, 0.4, 1), 1e-5 * scale_of(J))
    close(lib_weights("mgda", J) @ J, torch.zeros(P, dtype=F64), 1e-12 * scale_of(J))


def _zero_inside_hull(T: int) -> torch.Tensor:
    """Random g_1..g_{T−1} and g_T = −Σ s_t g_t (s > 0): 0 is in the relative interior of the
    hull, so the cone of directions from 0 is the whole span and contains −g0."""
    rng = np.random.default_rng(500 + T)
    P = num_params(T)
    J = rng.standard_normal((T, P))
    J[T - 1] = -(rng.uniform(0.2, 1.0, size=T - 1) @ J[: T - 1])
    return torch.from_numpy(J)


@pytest.mark.parametrize("T", [3, 5, 8])
def test_cagrad_zero_inside_hull(T):
    # With 0 inside the hull and c < 1, g_w = −t·g0 gives objective −t‖g0‖²(1 − c) < 0, so the
    # dual optimum g_w* is NOT 0 and d ≠ g0. (Regression: the library's probe of the root
    # bracket at u = 1e-12·hi is below its min-norm solver's resolution and wrongly concluded
    # "g_w* = 0", returning g0/(1+c²).)
    J = _zero_inside_hull(T)
    _, _gw, val = cagrad_direction(J, 0.4)
    assert val < -1e-3 * float(torch.linalg.vector_norm(J, dim=1).max()) ** 2
    close(cagrad(J, 0.4, 0), _cagrad_primal(J, 0.4), 1e-7 * scale_of(J))  # oracle sanity
    close(lib_weights("cagrad", J) @ J, cagrad(J, 0.4, 1), 1e-5 * scale_of(J))


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_cagrad_one_dimensional_regression(perm):
    # g = 2, −3, 3 (P = 1): g0 = 2/3, c' = 0.4·2/3; for g < 0 the dual objective is 0.4·g, so
    # g_w* = −3, d = g0 − c' = 0.4 and the update is 0.4/(1 + 0.16) (rescale = 1) for every
    # labelling of the tasks.
    J = torch.tensor([[2.0], [-3.0], [3.0]], dtype=F64)[list(perm)]
    expected = torch.tensor([0.4 / 1.16], dtype=F64)
    close(cagrad(J, 0.4, 1), expected, 1e-7)
    close(lib_weights("cagrad", J) @ J, expected, 1e-10)


@pytest.mark.parametrize("perm", [[0, 1, 2, 3, 4], [0, 1, 2, 4, 3], [4, 3, 2, 1, 0]])
def test_cagrad_permutation_regression(perm):
    # a, a/2, c, a, −a: 0 is in the hull and −a makes the dual objective negative, so
    # g_w* = −a and the update is the same for every labelling (a counterexample hypothesis
    # found).
    a = [0.1, 0.3, 0.3, 0.3, 0.3, 0.3]
    J = torch.tensor([a, [x / 2 for x in a], [0.3] * 6, a, [-x for x in a]], dtype=F64)
    expected = cagrad(J, 0.4, 1)
    Jp = J[perm]
    w = gradsurg.get_method("cagrad").weights(Jp @ Jp.T)
    close(w @ Jp, expected, 1e-5 * nmax(J))
