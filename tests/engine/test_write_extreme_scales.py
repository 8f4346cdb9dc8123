"""fp32 gradients whose norms span 1e-30 to 1e30 (issue 21's hard inputs): weights beyond the
float32 range used to meet J in the float32 combine and write inf into ``.grad`` without any
error. Now the step gives the exact update (combined in float64, rounded once) or, where that
update itself is beyond float32, goes through the non-finite policy with nothing written."""

from __future__ import annotations

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery

F64 = torch.float64
METHODS = ["pcgrad", "gradvac", "cagrad", "mgda", "config", "cr_mogm", "db_mtl", "dualproj", "upgrad", "mean", "sum"]


def _setup(scales):
    """One shared fp32 parameter; task t's loss is scales[t]·((u_t·p)² + 1) (positive, for the
    methods that take logarithms), its gradient 2·scales[t]·(u_t·p)·u_t."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    directions = torch.tensor(
        [[1.0, 0.5, -0.25, 0.0, 0.75], [-0.8, 1.0, 0.5, 0.25, 0.0], [0.3, -0.6, 1.0, -0.5, 0.2]]
    )[: len(scales)]
    def losses():
        return {f"t{t}": s * ((directions[t] * p).sum() ** 2 + 1) for t, s in enumerate(scales)}

    return p, losses


def _method(name):
    return gradsurg.build_method(name, num_tasks=3)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("scales", [(1e-30, 1e30), (1e-30, 1.0, 1e30), (1e-20, 1e-30, 1e20)])
def test_extreme_scales_give_the_exact_update_or_a_decision(name, scales):
    p, losses = _setup(list(scales))
    fresh = _method(name)
    opt = GradSurgery(torch.optim.SGD([p], lr=0.1), method=_method(name), shared=[p])
    # The textbook computation, per vector, in float64: the weights of a fresh copy of the
    # method on the float64 Gram of the float32 gradients, then Σ_t w_t g_t.
    rows = torch.stack([torch.autograd.grad(v, p)[0].to(F64) for v in losses().values()])
    w = fresh.weights(rows @ rows.T, losses=torch.stack([v.detach().to(F64) for v in losses().values()]))
    exact = w @ rows
    if bool(torch.isfinite(exact).all()) and float(exact.abs().max()) <= torch.finfo(torch.float32).max:
        stats = opt.backward(losses())
        assert not stats.skipped
        assert torch.isfinite(p.grad).all(), p.grad
        torch.testing.assert_close(p.grad.to(F64), exact, rtol=1e-5, atol=1e-37)
    else:
        with pytest.raises(FloatingPointError, match="non-finite"):
            opt.backward(losses())
        assert p.grad is None


def test_an_update_beyond_float32_is_a_nonfinite_step():
    # Weights ~1e30 on a gradient of norm ~1e30: the exact update (~1e60) has no float32 value.
    p = torch.nn.Parameter(torch.ones(3))
    method = gradsurg.get_method("mean")

    class Huge(type(method)):
        name = ""

        def _weights(self, gram, losses=None):
            return torch.full((gram.shape[0],), 1e30, dtype=gram.dtype)

    def losses():
        return [1e30 * p.sum(), 1e30 * (p * p).sum()]

    opt = GradSurgery(torch.optim.SGD([p], lr=0.1), method=Huge(), shared=[p])
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.backward(losses())
    assert p.grad is None
    skipping = GradSurgery(torch.optim.SGD([p], lr=0.1), method=Huge(), shared=[p], nonfinite="skip")
    stats = skipping.backward(losses())
    assert stats.skipped and p.grad is None
