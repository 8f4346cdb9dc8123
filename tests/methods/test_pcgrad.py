"""``pcgrad`` (gradsurg/methods/pcgrad.py): the library's Gram-space PCGrad vs. the textbook
algorithm on explicit vectors, seeding, and the two-task closed form.

Tolerance 1e-10·scale (scale = T·max‖g_t‖): the same sequential algorithm in two arithmetics
(dot products of vectors vs. entries of (C G)); each of the ≤ T² steps loses a few ulps, and
branches taken differently on a near-tie (dot ≈ 0) only change the result by the tiny quantity
that decided the tie, because both updates are continuous at the switch. The two-task closed
form is checked to 1e-12·max‖g_t‖ (|coefficients| ≤ 2 on each g).
"""

from __future__ import annotations

import pytest
import torch
from _assertions import close, requires_solver
from _families import (
    FAMILIES,
    SETTINGS,
    TS,
    all_orders,
    examples,
    gram,
    int_jacobians,
    make_family,
    nmax,
    random_order,
    scale_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from textbook.pcgrad import pcgrad

import gradsurg
from gradsurg.methods.pcgrad import pcgrad_weights, random_orders

grid = pytest.mark.parametrize("family", FAMILIES)
tgrid = pytest.mark.parametrize("T", TS)


@grid
@tgrid
@pytest.mark.parametrize("order_seed", [0, 1])
def test_pcgrad_pure(family, T, order_seed):
    J = make_family(family, T)
    order = random_order(T, order_seed)
    w = pcgrad_weights(gram(J), order)
    assert torch.isfinite(w).all()
    close(w @ J, pcgrad(J, order), 1e-10 * scale_of(J))


@pytest.mark.parametrize("seed", [0, 1, 123])
@pytest.mark.parametrize("T", [3, 5])
def test_pcgrad_seed_reproducible(seed, T):
    J = make_family("conflicting", T)
    a = gradsurg.methods.PCGrad(seed=seed)
    b = gradsurg.get_method("pcgrad", seed=seed)
    for _ in range(3):  # the same sequence of orders, call after call
        torch.testing.assert_close(a.weights(gram(J)), b.weights(gram(J)), rtol=0, atol=0)


def test_pcgrad_seeds_differ():
    # Not a strict contract, but five seeds all drawing identical orders would mean the seed is
    # ignored. Conflicting T=5 makes the result order dependent.
    J = make_family("conflicting", 5)
    outs = [gradsurg.methods.PCGrad(seed=s).weights(gram(J)) for s in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("family", ["random", "conflicting"])
@pytest.mark.parametrize("T", [2, 3])
def test_pcgrad_method_output_is_some_valid_order(family, T):
    # Whatever order the generator draws, the result must be PCGrad for SOME per-task order.
    J = make_family(family, T)
    candidates = [pcgrad(J, o) for o in all_orders(T)]
    m = gradsurg.methods.PCGrad(seed=0)
    for _ in range(4):
        out = m.weights(gram(J)) @ J
        err = min(float((out - c).abs().max()) for c in candidates)
        assert err <= 1e-10 * scale_of(J)


def test_aggregate_pcgrad_instance_is_textbook_for_two_tasks():
    # With T = 2 each task has a single other task, so the random order is irrelevant.
    J = make_family("conflicting", 2)
    out = gradsurg.aggregate(J, gradsurg.methods.PCGrad(seed=3))
    close(out, pcgrad(J, torch.tensor([[0, 1], [0, 1]])), 1e-10 * scale_of(J))


# --------------------------------------------------------------------------------------------
# Hypothesis: two-task closed form, relabelling with a relabelled order
# --------------------------------------------------------------------------------------------


def pcgrad_two_tasks(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Yu et al. 2020 with T = 2: if g1·g2 < 0 each gradient is projected on the normal plane of
    the other (original) one,

        g1' = g1 − (g1·g2)/‖g2‖² g2,   g2' = g2 − (g1·g2)/‖g1‖² g1,

    so g1' + g2' = g1 + g2 − (g1·g2)(g1/‖g1‖² + g2/‖g2‖²); otherwise the sum g1 + g2.
    (g1·g2 < 0 implies both norms are nonzero.)"""
    d = float(g1 @ g2)
    if d < 0:
        return g1 + g2 - d * (g1 / float(g1 @ g1) + g2 / float(g2 @ g2))
    return g1 + g2


@settings(max_examples=examples(300), **SETTINGS)
@given(J=int_jacobians(min_T=2, max_T=2), seed=st.integers(0, 2**31 - 1))
def test_pcgrad_two_tasks_closed_form(J, seed):
    expected = pcgrad_two_tasks(J[0], J[1])
    # |coefficients| ≤ 2 on each g: a few ulps of ‖g1‖ + ‖g2‖.
    tol = 1e-12 * nmax(J)
    w = gradsurg.get_method("pcgrad", seed=seed).weights(gram(J))
    close(w @ J, expected, tol, "PCGrad method")
    for order in ([[0, 1], [0, 1]], [[1, 0], [1, 0]], [[0, 1], [1, 0]]):
        w = pcgrad_weights(gram(J), torch.tensor(order))
        close(w @ J, expected, tol, f"order {order}")
    # When the pair conflicts, the result no longer conflicts with either gradient.
    if float(J[0] @ J[1]) < 0:
        out = w @ J
        assert float(out @ J[0]) >= -1e-12 * nmax(J) ** 2
        assert float(out @ J[1]) >= -1e-12 * nmax(J) ** 2


@settings(max_examples=examples(200), **SETTINGS)
@given(J=int_jacobians(), data=st.data())
def test_pcgrad_permutation_with_permuted_order(J, data):
    # PCGrad is not permutation invariant for a given generator state (the drawn order is per
    # position), but it is for a given ORDER relabelled with the tasks.
    T = J.shape[0]
    order = torch.stack(
        [torch.tensor(data.draw(st.permutations(range(T))), dtype=torch.int64) for _ in range(T)]
    )
    perm = torch.tensor(data.draw(st.permutations(range(T))), dtype=torch.int64)
    inv = torch.argsort(perm)  # old index → new index
    # New task a is old task perm[a]; it visits the old tasks order[perm[a]], renamed.
    order_p = inv[order[perm]]
    out = pcgrad_weights(gram(J), order) @ J
    out_p = pcgrad_weights(gram(J[perm]), order_p) @ J[perm]
    close(out_p, out, 1e-10 * J.shape[0] * nmax(J))
    # and both are the textbook algorithm
    close(out, pcgrad(J, order), 1e-10 * J.shape[0] * nmax(J))


def _surgery_cases():
    """(G, orders) for the compiled-vs-numpy check: random, norm ratios to 1e30, zero and
    opposite gradients, T up to 64."""
    gen = torch.Generator().manual_seed(5)
    cases = []
    for T, P in [(2, 3), (4, 6), (16, 200), (64, 200), (20, 10)]:
        J = torch.randn(T, P, generator=gen, dtype=torch.float64)
        J[: T // 2] *= -0.3
        if T >= 4:
            J[1] = -J[0]
            J[2] = 0.0
        cases.append((J @ J.T, random_orders(T, gen)))
        scales = 10.0 ** torch.empty(T, dtype=torch.float64).uniform_(-15, 15, generator=gen)
        Js = scales[:, None] * J
        cases.append((Js @ Js.T, random_orders(T, gen)))
    return cases


@requires_solver("pcgrad_weights")
@pytest.mark.parametrize("index", range(10))
def test_compiled_and_numpy_pcgrad_agree(index, monkeypatch):
    # csrc/cpu/surgery.cpp follows pcgrad_weights' visits; the updates agree to rounding.
    from gradsurg.methods import _compiled
    G, order = _surgery_cases()[index]
    out = pcgrad_weights(G, order)
    monkeypatch.setattr(_compiled, "ENABLED", False)
    ref = pcgrad_weights(G, order)
    norms = G.diagonal().clamp(min=0).sqrt()
    diff = out - ref
    assert float((diff @ G @ diff).clamp(min=0).sqrt()) <= 1e-12 * float(ref.abs() @ norms + norms.max())
