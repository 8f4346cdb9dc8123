"""What is particular to the C++ CPU backend: large P (many blocks over threads), exact symmetry,
and a full surgery step on it. Its ops against the oracle (shapes, layouts, dtypes, the whole
fp32 range) are in tests/kernels/test_conformance.py."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery
from gradsurg._tolerances import GRAM_RTOL
from gradsurg.kernels import cpp

if not cpp.available():  # pragma: no cover - the build is part of `make setup`
    pytest.skip(f"C++ extension not built (no compiler at install time, or GRADSURG_NO_EXT=1): {cpp.load_error()}",
                allow_module_level=True)

# Gram (GRAM_RTOL): fp32 products over blocks of ≤ 3072 columns, float64 across blocks. Relative
# to the Gram's scale (max diagonal) the rounding is a few fp32 ulps per block; fp16/bf16 products
# are exact in fp32. Float64 data is summed in float64.


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("num_tasks", [2, 7])
def test_gram_large_p_matches_float64(dtype, num_tasks):
    # ~500-4000 blocks shared by the threads, per-thread partials summed at the end.
    matrix = torch.randn(num_tasks, 1_000_003).to(dtype)
    exact = matrix.double() @ matrix.double().T
    got = cpp.gram(matrix)
    scale = exact.diagonal().max().item()
    torch.testing.assert_close(got, exact, rtol=0, atol=GRAM_RTOL[dtype] * scale)
    assert torch.equal(got, got.T)  # the lower triangle is mirrored: exactly symmetric


def test_gram_rescaled_blocks_among_ordinary_ones():
    # Most blocks ordinary, a few with huge or tiny entries (recomputed with rows rescaled), over
    # several threads: the rescaled blocks must land in the same accumulators.
    matrix = torch.randn(3, 200_000)
    matrix[0, 5000:5100] *= 1e30
    matrix[1, 150_000:] *= 1e-35
    matrix[2, ::7] = 0.0
    exact = matrix.double() @ matrix.double().T
    d = exact.diagonal().sqrt()
    err = ((cpp.gram(matrix) - exact).abs() / torch.outer(d, d)).max().item()
    assert err < 1e-6


@pytest.mark.parametrize("method", ["pcgrad", "mgda", "cagrad"])
def test_full_step_matches_torch_backend(make_model, method):
    model, x, y = make_model(4)
    twin = copy.deepcopy(model)
    fast = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=method, backend="cpp")
    slow = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method=method, backend="torch")
    s_fast = fast.backward(model.losses(x, y))
    s_slow = slow.backward(twin.losses(x, y))
    assert s_fast.backend == "cpp" and s_slow.backend == "torch"
    scale = s_slow.gram.diagonal().max().item()
    torch.testing.assert_close(s_fast.gram, s_slow.gram, rtol=0, atol=GRAM_RTOL[torch.float32] * scale)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    fast.step()
    slow.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_functional_layer_uses_cpp():
    matrix = torch.randn(3, 5000)
    torch.testing.assert_close(gradsurg.gramian(matrix, backend="cpp"), gradsurg.gramian(matrix, backend="torch"),
                               rtol=1e-6, atol=1e-6)
