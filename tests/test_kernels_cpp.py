"""The C++ CPU backend against float64 references computed here, and in a full surgery step."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery
from gradsurg.kernels import cpp, dispatch

if not cpp.available():  # pragma: no cover - the build is part of `make setup`
    pytest.skip(f"C++ extension not built (no compiler at install time, or GRADSURG_NO_EXT=1): {cpp.load_error()}",
                allow_module_level=True)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Gram: fp32 products over blocks of 2048 columns, float64 across blocks. Relative to the
# Gram's scale (max diagonal) the rounding is a few fp32 ulps per block; fp16/bf16 products are
# exact in fp32. Float64 data is summed in float64.
GRAM_RTOL = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5, torch.float64: 1e-12}
# Combine: T fp32 multiply-adds then one rounding to the storage dtype.
COMBINE_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def scale_atol(exact: torch.Tensor, rtol: float) -> float:
    return rtol * max(exact.abs().max().item(), 1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tasks", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("size", [1, 7, 2049, 65537, 1_000_003])
def test_gram_matches_float64(dtype, num_tasks, size):
    if size == 1_000_003 and num_tasks > 7:
        size = 100_003  # keeps the suite fast; the large-P path is covered at T ≤ 7
    matrix = torch.randn(num_tasks, size).to(dtype)
    exact = matrix.double() @ matrix.double().T
    got = cpp.gram(matrix)
    assert got.dtype == torch.float64 and got.shape == (num_tasks, num_tasks)
    torch.testing.assert_close(got, exact, rtol=0, atol=scale_atol(exact, GRAM_RTOL[dtype]))
    assert torch.equal(got, got.T)


def test_gram_large_values_and_zero_rows():
    matrix = torch.zeros(3, 5000)
    matrix[0] = 1e15
    matrix[2, ::3] = -2.5
    exact = matrix.double() @ matrix.double().T
    torch.testing.assert_close(cpp.gram(matrix), exact, rtol=GRAM_RTOL[torch.float32], atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gram_lists_matches_concatenation(dtype):
    shapes = [(3, 4), (1,), (2049,), (7, 5, 3)]
    grads = [[torch.randn(s).to(dtype) for s in shapes] for _ in range(5)]
    grads[2][1] = grads[2][1].expand(1)  # a one-element parameter
    grads[1][0] = torch.randn(4, 3).to(dtype).T  # non-contiguous
    flat = torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in grads]).double()
    exact = flat @ flat.T
    torch.testing.assert_close(cpp.gram_lists(grads), exact, rtol=0, atol=scale_atol(exact, GRAM_RTOL[dtype]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tasks", [1, 3, 16])
@pytest.mark.parametrize("size", [1, 2047, 100_003])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_combine_matches_float64(dtype, num_tasks, size, beta):
    matrix = torch.randn(num_tasks, size).to(dtype)
    weights = torch.randn(num_tasks, dtype=torch.float64)
    start = torch.randn(size).to(dtype)
    out = start.clone()
    cpp.combine_into(out, matrix, weights, beta=beta)
    applied = weights if dtype == torch.float64 else weights.to(torch.float32)  # fp32 weights below float64
    exact = beta * start.double() + applied.double() @ matrix.double()
    torch.testing.assert_close(out.double(), exact, rtol=COMBINE_RTOL[dtype], atol=scale_atol(exact, COMBINE_RTOL[dtype]))


def test_combine_overwrite_ignores_nan_in_output():
    out = torch.full((3000,), float("nan"))
    cpp.combine_into(out, torch.ones(2, 3000), torch.tensor([1.0, 2.0]))
    assert torch.equal(out, torch.full((3000,), 3.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_flatten_into_handles_layouts_and_missing(dtype):
    shapes = [(2, 3, 4, 5), (1,), (600_000,), (3, 7)]
    row = torch.full((sum(torch.Size(s).numel() for s in shapes),), 9.0, dtype=dtype)
    views, offset = [], 0
    for s in shapes:
        n = torch.Size(s).numel()
        views.append(row[offset : offset + n].view(s))
        offset += n
    grads = [
        torch.randn(2, 3, 4, 5).to(dtype).to(memory_format=torch.channels_last),
        None,
        torch.randn(600_000).to(dtype),
        torch.randn(7, 3).to(dtype).T,  # non-contiguous
    ]
    cpp.flatten_into(views, grads)
    expected = torch.cat([grads[0].reshape(-1), torch.zeros(1, dtype=dtype), grads[2], grads[3].reshape(-1)])
    assert torch.equal(row, expected)


def test_auto_picks_cpp_on_cpu():
    assert dispatch.get_backend("auto", torch.device("cpu")) is cpp


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
