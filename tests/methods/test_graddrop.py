"""``graddrop`` (gradsurg/methods/graddrop.py) vs. the textbook GradDrop (one coordinate at a
time with given uniforms), its generator stream, sign/bound properties and GradSurgery path.

Tolerance 1e-12·scale (scale = T·max‖g_t‖): the same element-wise sums in another order.
"""

from __future__ import annotations

import pytest
import torch
from _assertions import close
from _families import TS, int_jacobians, make_family, scale_of
from _models import check_end_to_end
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textbook.graddrop import graddrop

import gradsurg
from gradsurg.methods.graddrop import graddrop_combine

F64 = torch.float64
FAMILIES = ["random", "conflicting", "aligned", "one_zero", "duplicated"]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _chunked_uniforms(seed: int, P: int, chunk: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(min(chunk, P - s), generator=g, dtype=F64) for s in range(0, P, chunk)])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("leak", [0.0, 0.25])
def test_graddrop_vs_textbook(family, T, leak):
    J = make_family(family, T)
    P = J.shape[1]
    method = gradsurg.get_method("graddrop", leak=leak, seed=5, chunk_size=7)
    out = torch.full((P,), 3.0, dtype=F64)
    method.combine_into(out, J, beta=0.0)
    U = _chunked_uniforms(5, P, 7)
    expected = graddrop(J, U, leak)
    close(out, expected, 1e-12 * scale_of(J), f"{family} T={T}")
    close(graddrop_combine(J, U, leak), expected, 1e-12 * scale_of(J))
    # beta accumulates; the next call continues the generator's stream.
    out2 = out.clone()
    method.combine_into(out2, J, beta=1.0)
    g = torch.Generator().manual_seed(5)
    for s in range(0, P, 7):  # skip the first call's draws
        torch.rand(min(7, P - s), generator=g, dtype=F64)
    U2 = torch.cat([torch.rand(min(7, P - s), generator=g, dtype=F64) for s in range(0, P, 7)])
    close(out2, out + torch.from_numpy(graddrop(J, U2, leak)), 2e-12 * scale_of(J))


@PROPS
@given(J=int_jacobians(max_T=6, max_P=40, max_exp=6), seed=st.integers(0, 2**31 - 1), leak=st.sampled_from([0.0, 0.3]))
def test_graddrop_signs_and_bounds(J, seed, leak):
    U = torch.rand(J.shape[1], generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = graddrop_combine(J, U, leak)
    assert torch.isfinite(out).all()
    bound = J.abs().sum(dim=0)
    assert (out.abs() <= bound * (1 + 1e-12)).all()
    total, abs_total = J.sum(0), J.abs().sum(0)
    purity = torch.where(abs_total > 0, 0.5 * (1 + total / torch.where(abs_total > 0, abs_total, 1.0)), 0.5)
    positive = purity > U
    if leak == 0.0:
        assert (out[positive] >= 0).all() and (out[~positive] <= 0).all()
        # Purity 1 (all components ≥ 0) always keeps everything.
        pure = (J >= 0).all(0)
        torch.testing.assert_close(out[pure], total[pure], rtol=1e-12, atol=0.0)
    # Relabelling the tasks does not change the result for the same uniforms.
    perm = torch.randperm(J.shape[0], generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(graddrop_combine(J[perm], U, leak), out, rtol=1e-12, atol=1e-300)
    # Positive scale: scales the output.
    torch.testing.assert_close(graddrop_combine(4.0 * J, U, leak), 4.0 * out, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kwargs, arg", [({"leak": 1.5}, "leak"), ({"chunk_size": 0}, "chunk_size")])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}: "):
        gradsurg.get_method("graddrop", **kwargs)


def test_end_to_end():
    def expected(Js, Ls, method):
        g = torch.Generator()
        g.set_state(method.generator.get_state())
        U = torch.rand(Js[-1].shape[1], generator=g, dtype=F64)  # P < chunk_size: one draw
        return graddrop(Js[-1], U, 0.0), 1e-12 * scale_of(Js[-1])

    check_end_to_end("graddrop", expected)
