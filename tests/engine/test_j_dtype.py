"""j_dtype=torch.bfloat16: J stored in half the memory; fp32 products, fp64 Gram sums; the update
stays within a bound of fp32 storage."""

from __future__ import annotations

import copy

import pytest
import torch

from gradsurg import GradSurgery


@pytest.mark.parametrize("name", ["mean", "pcgrad", "mgda", "upgrad", "nash_mtl"])
def test_bf16_storage_update_is_close_to_fp32_storage(name, make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=name).backward(model.losses(x, y))
    narrow = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method=name, j_dtype=torch.bfloat16)
    narrow.backward(twin.losses(x, y))
    assert narrow._engine.buffers.current.groups[0].matrix.dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.float32 for p in twin.parameters())
    full = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    half = torch.cat([p.grad.reshape(-1) for p in twin.parameters()])
    # bf16 keeps 8 significant bits: each stored entry is within 2^-9 relative.
    assert (half - full).norm() <= 2e-2 * full.norm()


def test_bf16_storage_accumulates_and_rejects_matrix_methods(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad", j_dtype=torch.bfloat16)
    opt.backward(model.losses(x, y), sync=False)
    stats = opt.backward(model.losses(x, y))
    assert stats.micro_batches == 2 and torch.isfinite(stats.gram).all()
    with pytest.raises(ValueError, match="j_dtype: graddrop works on J itself"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="graddrop", j_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"j_dtype: expected a floating torch\.dtype"):
        GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), j_dtype=torch.int8)
