"""What is particular to the Triton kernels (interpreter on CPU, or a GPU): the GPU launch
configurations (tile sizes, several tiles per program), determinism, one-launch flatten, dtype
groups and mixed dtypes, strided ``out``. Every op against the oracle on shapes, layouts, dtypes
and the whole float32 range is in tests/kernels/test_conformance.py, for every backend.

Tolerances, and why:

* Gram, every input dtype: float16/bfloat16 inputs are upcast exactly to float32 and the product
  of two of them is exact in float32 (≤ 22 significant bits), so for them, as for float32 inputs
  (product rounded once, 2⁻²⁴), the only other error is the float32 accumulation inside one
  column tile (≤ 8192 columns in the interpreter, 32–128 on a GPU); tiles are summed in float64.
  Entry (i, j) is compared with the float64 Gram of the *same rounded inputs* within
  ``1e-5 · Σ_k |J_ik|·|J_jk|``: the natural scale of a dot product (an off-diagonal entry can
  cancel to ~0, a relative error on it means nothing), ~40× the typical √n·2⁻²⁴ error of an
  8192-term float32 sum, far below anything wrong (a lost tile or row is O(1)).
* combine: float32 arithmetic over T terms then one rounding to out's dtype, so
  ``|got − exact| ≤ (T + 2)·2⁻²⁴·(Σ_t |w_t||J_t| + |β||out|) + u_out·|exact|`` with u_out the unit
  roundoff of out's dtype (2⁻²⁴, 2⁻¹¹, 2⁻⁸); exact uses the float32-rounded weights (the kernel's
  documented input). Exception: triton 3.9's *interpreter* converts float32 → bfloat16 by
  truncation (``cast_impl`` passes no rounding mode), so under it a bfloat16 ``out`` gets one
  bfloat16 ulp (2⁻⁷ relative); compiled code rounds to nearest (``cvt.rn.bf16.f32``, asserted on
  the PTX by test_triton_aot.py).
* flatten: a copy, compared bit for bit.
"""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton", reason="triton not installed")

# Every input dtype is accumulated in float32: one Gram tolerance for all (see the docstring).
from gradsurg._tolerances import FLOAT32_GRAM_RTOL as GRAM_RTOL

backend = importlib.import_module("gradsurg.kernels.triton")
gram_mod = importlib.import_module("gradsurg.kernels.triton.gram")
combine_mod = importlib.import_module("gradsurg.kernels.triton.combine")
flatten_mod = importlib.import_module("gradsurg.kernels.triton.flatten")
common_mod = importlib.import_module("gradsurg.kernels.triton._common")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TASKS = [1, 2, 3, 7, 16]
SIZES = [1, 7, 1000, 65537, 100_000]
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def _ids(value):
    return str(value).replace("torch.", "")


def _random(num_tasks: int, size: int, dtype: torch.dtype, device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # A common component makes the tasks correlated (off-diagonal entries far from 0) and the
    # offset keeps the diagonal from being the only large entries.
    shared = torch.randn(1, size, generator=gen, dtype=torch.float64)
    own = torch.randn(num_tasks, size, generator=gen, dtype=torch.float64)
    return (0.6 * shared + own + 0.1).to(dtype).to(device)


def _assert_gram_close(got: torch.Tensor, rows: torch.Tensor) -> None:
    """``rows`` (T, P) already holds the rounded inputs; compare with their float64 Gram."""
    exact_in = rows.detach().cpu().to(torch.float64)
    exact = exact_in @ exact_in.T
    scale = exact_in.abs() @ exact_in.abs().T
    assert got.dtype == torch.float64
    assert got.shape == exact.shape
    err = (got.cpu() - exact).abs()
    worst = (err / scale.clamp_min(torch.finfo(torch.float64).tiny)).max().item()
    assert worst <= GRAM_RTOL, f"Gram error {worst:.3g} × Σ|J_i||J_j| exceeds {GRAM_RTOL}"


# --------------------------------------------------------------------------------------- gram


def test_gram_is_deterministic(device):
    matrix = _random(5, 100_000, torch.float32, device)
    assert torch.equal(backend.gram(matrix), backend.gram(matrix))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_ids)
@pytest.mark.parametrize("num_tasks", [3, 16, 33])
def test_gram_gpu_configuration(device, dtype, num_tasks):
    # The tile sizes the launcher picks on a GPU, with few programs so that each one walks
    # several tiles (the float64 accumulation loop) and the last tile is partial.
    t_pad = common_mod.t_pad(num_tasks)
    tile, warps = gram_mod._gpu_tile(t_pad)
    matrix = _random(num_tasks, 7 * tile + 5, dtype, device)
    got = gram_mod._launch_gram(matrix, tile, warps, max_programs=3)
    _assert_gram_close(got, matrix)


# --------------------------------------------------------------------------------- gram_lists

LIST_SHAPES = [(1,), (7,), (10, 100), (3, 5, 7), (65537,), (1,), (2, 3, 4, 5)]


def _task_lists(num_tasks, shapes, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(num_tasks):
        grads.append([torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).to(device) for s in shapes])
    return grads


def _concat(grads):
    return torch.stack([torch.cat([g.reshape(-1).cpu() for g in row]) for row in grads])


def test_gram_lists_64_tasks(device):
    grads = _task_lists(64, [(3,), (40, 5), (1,)], torch.float32, device)
    _assert_gram_close(backend.gram_lists(grads), _concat(grads))


def test_gram_lists_non_contiguous_and_mixed_dtypes(device):
    gen = torch.Generator().manual_seed(1)
    grads = []
    for _ in range(3):
        weight = torch.randn(30, 20, generator=gen).to(device).T  # non-contiguous
        conv = torch.randn(4, 3, 5, 5, generator=gen).to(device).to(memory_format=torch.channels_last)
        half = torch.randn(77, generator=gen).to(torch.bfloat16).to(device)
        double = torch.randn(9, generator=gen, dtype=torch.float64).to(device)
        grads.append([weight, conv, half, double])
    _assert_gram_close(backend.gram_lists(grads), _concat(grads))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_ids)
def test_gram_lists_gpu_configuration(device, dtype):
    # GPU tiles, chunks of two tiles and 3 programs: items span parameters, chunks and tiles.
    num_tasks = 5
    tile, warps = gram_mod._gpu_tile(common_mod.t_pad(num_tasks))
    shapes = [(1,), (2 * tile + 3,), (5 * tile,), (7,)]
    grads = _task_lists(num_tasks, shapes, dtype, device)
    got = gram_mod._launch_gram_lists(grads, dtype, tile, warps, max_programs=3, chunk=2 * tile)
    _assert_gram_close(got, _concat(grads))


# ------------------------------------------------------------------------------------ combine


def _out_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    if dtype == torch.bfloat16 and device.type == "cpu":  # interpreter: truncation, see above
        return 2.0**-7
    return UNIT_ROUNDOFF[dtype]


def _assert_combine_close(got, start, matrix, weights, beta):
    w = weights.to(torch.float32).to(torch.float64).cpu()
    j = matrix.cpu().to(torch.float64)
    exact = w @ j
    bound = (w.abs() @ j.abs())
    if beta != 0.0:
        old = start.cpu().to(torch.float64)
        exact = exact + beta * old
        bound = bound + abs(beta) * old.abs()
    num_tasks = matrix.shape[0]
    tol = (num_tasks + 2) * 2.0**-24 * bound + _out_roundoff(got.dtype, got.device) * exact.abs()
    err = (got.cpu().to(torch.float64) - exact).abs()
    assert torch.isfinite(got).all()
    bad = err > tol
    assert not bad.any(), f"{int(bad.sum())} entries off, worst excess {(err - tol).max().item():.3g}"


def test_combine_fractional_beta_and_strided_out(device):
    matrix = _random(4, 3001, torch.float32, device)
    buffer = _random(1, 6002, torch.float32, device, seed=5)[0]
    out = buffer[::2]
    start = out.clone()
    weights = torch.randn(4, dtype=torch.float16).to(device)
    backend.combine_into(out, matrix, weights, beta=0.25)
    _assert_combine_close(out, start, matrix, weights, 0.25)
    assert torch.equal(buffer[1::2], _random(1, 6002, torch.float32, device, seed=5)[0][1::2])


def test_combine_float32_out_from_bf16_matrix(device):
    matrix = _random(5, 1000, torch.bfloat16, device)
    out = torch.zeros(1000, dtype=torch.float32, device=device)
    weights = torch.randn(5)
    backend.combine_into(out, matrix, weights, beta=0.0)
    _assert_combine_close(out, None, matrix, weights, 0.0)


@pytest.mark.parametrize("num_tasks", [1, 3, 16])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_combine_gpu_configuration(device, num_tasks, beta):
    block, rows, warps = combine_mod._config(num_tasks, 10**6, interpreted=False)
    size = 3 * block + 17
    matrix = _random(num_tasks, size, torch.float32, device)
    out = torch.full((size,), float("nan"), device=device) if beta == 0.0 else _random(1, size, torch.float32, device)[0]
    start = out.clone()
    weights = torch.randn(num_tasks)
    combine_mod._launch(out, matrix, weights.float().to(device), beta, block, rows, warps)
    _assert_combine_close(out, start, matrix, weights, beta)


# ------------------------------------------------------------------------------------ flatten


def _row_views(row: torch.Tensor, shapes):
    views, offset = [], 0
    for s in shapes:
        n = torch.Size(s).numel()
        views.append(row[offset : offset + n].view(s))
        offset += n
    return views


def _expected_row(grads, shapes, dtype):
    return torch.cat(
        [(torch.zeros(s, dtype=dtype) if g is None else g.cpu()).reshape(-1) for g, s in zip(grads, shapes)]
    )


FLAT_SHAPES = [(1,), (3, 4), (7,), (1,), (2, 3, 4, 5), (65537,), (1, 1), (100_000,), (5,)]


def _flat_grads(shapes, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).to(device) for s in shapes]


@pytest.fixture
def count_launches(monkeypatch):
    calls = []
    original = flatten_mod._launch

    def spy(dst, srcs, block, warps):
        calls.append(len(dst))
        return original(dst, srcs, block, warps)

    monkeypatch.setattr(flatten_mod, "_launch", spy)
    return calls


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_flatten_contiguous_in_one_launch(device, dtype, count_launches):
    total = sum(torch.Size(s).numel() for s in FLAT_SHAPES)
    matrix = torch.full((3, total), 7.0, dtype=dtype, device=device)
    grads = _flat_grads(FLAT_SHAPES, dtype, device)
    grads[2] = None  # a parameter this task does not reach
    backend.flatten_into(_row_views(matrix[1], FLAT_SHAPES), grads)
    assert torch.equal(matrix[1].cpu(), _expected_row(grads, FLAT_SHAPES, dtype))
    assert (matrix[0] == 7).all() and (matrix[2] == 7).all()  # neighbouring rows untouched
    assert count_launches == [len(FLAT_SHAPES)]


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_flatten_strided_and_channels_last(device, dtype, count_launches):
    shapes = [(3, 4), (4, 3, 5, 5), (1,), (20, 30), (6,), (2, 8, 1, 1), (65537,), (9,)]
    gen = torch.Generator().manual_seed(2)
    grads = [
        torch.randn(4, 3, generator=gen).T,  # transposed
        torch.randn(4, 3, 5, 5, generator=gen).to(memory_format=torch.channels_last),
        None,
        torch.randn(20, 60, generator=gen)[:, ::2],  # strided slice
        torch.randn(6, generator=gen),
        torch.randn(2, 8, 1, 1, generator=gen).to(memory_format=torch.channels_last),
        torch.randn(65537, generator=gen),
        torch.randn(1, generator=gen).expand(9),  # stride 0
    ]
    grads = [None if g is None else g.to(dtype).to(device) for g in grads]
    total = sum(torch.Size(s).numel() for s in shapes)
    matrix = torch.full((2, total), 7.0, dtype=dtype, device=device)
    backend.flatten_into(_row_views(matrix[0], shapes), grads)
    assert torch.equal(matrix[0].cpu(), _expected_row(grads, shapes, dtype))
    assert (matrix[1] == 7).all()
    # The contiguous ones (and the missing one) went through the kernel, in one launch.
    assert len(count_launches) == 1 and count_launches[0] >= 4


def test_flatten_gpu_configuration(device):
    shapes = [(1,), (flatten_mod._GPU_BLOCK * 2 + 1,), (3,), (flatten_mod._GPU_BLOCK,)]
    matrix = torch.zeros(1, sum(torch.Size(s).numel() for s in shapes), device=device)
    grads = _flat_grads(shapes, torch.float32, device)
    grads[2] = None
    flatten_mod._launch(_row_views(matrix[0], shapes), grads, flatten_mod._GPU_BLOCK, flatten_mod._GPU_WARPS)
    assert torch.equal(matrix[0].cpu(), _expected_row(grads, shapes, torch.float32))


def test_backend_name(device):
    assert backend.name == "triton"
    assert {"flatten_into", "gram", "gram_lists", "combine_into"} <= set(backend.__all__)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_ids)
def test_gram_rescaled_tiles_in_gpu_configuration(device, dtype):
    # GPU tile sizes, 3 programs walking several tiles each: tiles whose rows need rescaling
    # (huge in tile 2, tiny in tile 5, a subnormal row throughout) among ordinary ones.
    num_tasks = 5
    tile, warps = gram_mod._gpu_tile(common_mod.t_pad(num_tasks))
    matrix = _random(num_tasks, 7 * tile + 5, torch.float64, device)
    matrix[0, 2 * tile : 3 * tile] *= 2.0**110
    matrix[1, 5 * tile : 6 * tile] *= 2.0**-120
    matrix[3] *= 2.0**-128  # float32 and bfloat16 subnormals
    matrix = matrix.to(dtype)
    got = gram_mod._launch_gram(matrix, tile, warps, max_programs=3)
    exact_in = matrix.cpu().double()
    exact = exact_in @ exact_in.T
    d = exact.diagonal().sqrt()
    assert ((got.cpu() - exact).abs() / torch.outer(d, d)).max().item() < GRAM_RTOL
