"""The reference kernels against float64 computations done here by hand."""

from __future__ import annotations

import pytest
import torch

from gradsurg._tolerances import FLOAT64_RTOL
from gradsurg.kernels import reference

# The float64-accumulated Gram against the float64 Gram of the same (rounded) inputs, every dtype
# within FLOAT64_RTOL: the chunks are upcast before the matmul, so only float64 rounding remains.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_tasks,size", [(1, 1), (2, 7), (3, 65537), (5, 200_003)])
def test_gram_matches_float64(dtype, num_tasks, size):
    matrix = torch.randn(num_tasks, size).to(dtype)
    exact = matrix.double() @ matrix.double().T
    got = reference.gram(matrix)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, exact, rtol=FLOAT64_RTOL, atol=1e-12 * exact.abs().max().item())


def test_gram_fp32_large_p_is_float64_accurate():
    # One float32 mm over 2e6 columns drifts by ~1e-3 relative here; the chunked float64 path must not.
    matrix = torch.rand(4, 2_000_000)
    exact = matrix.double() @ matrix.double().T
    err_ref = ((reference.gram(matrix) - exact).abs() / exact.abs()).max().item()
    assert err_ref < 1e-12


def test_gram_lists_equals_gram_of_concatenation():
    shapes = [(3, 4), (5,), (1,), (2, 3, 2)]
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(3)]
    flat = torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in grads])
    torch.testing.assert_close(reference.gram_lists(grads), flat @ flat.T, rtol=1e-12, atol=1e-12)


def test_flatten_into_copies_strided_grads_and_zeros_missing():
    shapes = [(3, 4), (5,), (2, 2)]
    row = torch.full((12 + 5 + 4,), 7.0)
    views, offset = [], 0
    for s in shapes:
        n = torch.Size(s).numel()
        views.append(row[offset : offset + n].view(s))
        offset += n
    g0 = torch.randn(4, 3).T  # non-contiguous
    g2 = torch.randn(2, 2)
    reference.flatten_into(views, [g0, None, g2])
    expected = torch.cat([g0.reshape(-1), torch.zeros(5), g2.reshape(-1)])
    assert torch.equal(row, expected)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_combine_into(beta):
    matrix = torch.randn(4, 1001, dtype=torch.float64)
    weights = torch.randn(4, dtype=torch.float64)
    start = torch.randn(1001, dtype=torch.float64)
    out = start.clone()
    reference.combine_into(out, matrix, weights, beta=beta)
    expected = beta * start + sum(weights[t] * matrix[t] for t in range(4))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_combine_into_overwrite_ignores_nan_in_output():
    out = torch.full((5,), float("nan"))
    reference.combine_into(out, torch.ones(2, 5), torch.tensor([1.0, 2.0]))
    assert torch.equal(out, torch.full((5,), 3.0))
