"""The decide stage: the non-finite policy and the finiteness check."""

from __future__ import annotations

import pytest
import torch

from gradsurg._engine.decide import nonfinite_tasks


def test_nonfinite_decision_raises_or_names_the_tasks():
    finite = torch.tensor([True, False, True])
    assert nonfinite_tasks(["a", "b", "c"], torch.ones(3, dtype=torch.bool), "raise") == ()
    assert nonfinite_tasks(["a", "b", "c"], finite, "skip") == ("b",)
    with pytest.raises(FloatingPointError, match=r"task\(s\) \['b'\].*nothing was changed"):
        nonfinite_tasks(["a", "b", "c"], finite, "raise")




@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_all_finite_sees_every_kind_of_nonfinite_value(dtype, bad):
    from gradsurg._engine.decide import all_finite

    tensors = [torch.randn(4, 3).to(dtype), torch.empty(0, dtype=dtype), torch.randn(7).to(dtype)]
    if bad is not None:
        tensors[2][5] = bad
    assert bool(all_finite(tensors)) is (bad is None)
    assert bool(all_finite([]))
