"""The method kinds (gradsurg/methods/base.py): contracts every method of a kind keeps.

Loss-space methods (:class:`LossWeighting`): the effective weights ∂objective/∂L_t are finite,
non-negative and normalised as each paper defines them, for any positive losses.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradsurg
from gradsurg.methods.dwa import DWA
from gradsurg.methods.famo import FAMO
from gradsurg.methods.gls import GLS
from gradsurg.methods.rlw import RLW
from gradsurg.methods.stch import STCH

F64 = torch.float64


@settings(max_examples=40, deadline=None)
@given(
    seq=st.lists(st.lists(st.floats(1e-4, 1e4, allow_nan=False), min_size=3, max_size=3), min_size=1, max_size=5),
    seed=st.integers(0, 2**31 - 1),
    tau=st.floats(0.05, 10.0),
)
def test_loss_weights_finite_and_normalised(seq, seed, tau):
    rlw, dwa, famo, stch, gls = RLW(seed=seed), DWA(temperature=tau), FAMO(), STCH(mu=tau), GLS()
    for v in seq:
        L = torch.tensor(v, dtype=F64)
        for m, total in ((rlw, 1.0), (dwa, 3.0), (famo, 1.0), (stch, 1.0), (gls, None)):
            m.objective(L)
            w = m.last_weights
            assert w.shape == (3,) and bool(torch.isfinite(w).all()) and bool((w >= 0).all())
            if total is not None:
                assert math.isclose(float(w.sum()), total, rel_tol=1e-9)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in gradsurg.available_methods()
        if issubclass(gradsurg.methods.method_class(n), gradsurg.methods.GramMethod)
    ],
)
def test_a_non_finite_gram_is_refused_by_name(name):
    # Rows of norm 1e200 overflow float64 in G: every Gram method says so instead of failing inside.
    gram = torch.tensor([[float("inf"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    method = gradsurg.get_method(name)
    with pytest.raises(ValueError, match="gram: has non-finite entries"):
        method.weights(gram, losses=torch.ones(2, dtype=torch.float64))


# --- build_method: every registered method from one setup, no per-method branches ---------


@pytest.mark.parametrize("name", gradsurg.available_methods())
def test_build_method_builds_every_method_from_the_setup(name):
    layer = [torch.nn.Parameter(torch.ones(3))]
    method = gradsurg.methods.build_method(name, num_tasks=2, layer=layer)
    assert isinstance(method, gradsurg.methods.method_class(name))
    assert method.needs <= gradsurg.methods.registry.SETUP_ARGUMENTS


def test_build_method_passes_only_declared_needs_and_names_missing_ones():
    assert gradsurg.methods.build_method("uw", num_tasks=3).log_vars.numel() == 3
    with pytest.raises(ValueError, match="num_tasks: method 'uw' needs it"):
        gradsurg.methods.build_method("uw")
    with pytest.raises(ValueError, match="layer: method 'gradnorm' needs it"):
        gradsurg.methods.build_method("gradnorm", num_tasks=2)
