"""Every registered kernel backend against the oracle, :mod:`gradsurg.kernels.reference`.

One parametrised suite over the registry (``gradsurg.kernels.registry``): each backend that runs
on this machine (torch and cpp on CPU tensors, triton on CPU tensors under the Triton
interpreter or on a GPU, cuda on a GPU) is checked op by op — ``gram``, ``gram_lists``,
``combine_into``, ``flatten_into`` — on awkward shapes (P = 1, primes, T ∈ {1, 2, 3, 7, 16} and
the 64-task limit of the GPU kernels), layouts (strided, transposed, stride-0), dtypes, ``beta``,
``None`` gradients, and on the whole finite range of float32/bfloat16/float16 (issue 10, 2.1). A
backend that cannot run here is skipped with the registry's reason.

The oracle is evaluated exactly: its float64 Gram of the (already rounded) inputs, and its
combine on float64 copies of the inputs.

Tolerances, and why (the values: :mod:`gradsurg._tolerances`, shared with benchmarks/gpu_check):

* Gram, float32/float16/bfloat16 inputs: backends form float32 products (exact for
  float16/bfloat16 inputs, one rounding for float32) summed in float32 over one column block
  (≤ 8192 columns) and in float64 across blocks. Entry (i, j) is compared within
  ``1e-5 · √(G_ii·G_jj)``: the scale every entry of a Gram matrix lives on (an off-diagonal
  entry can cancel to ~0), ≫ the √n·2⁻²⁴ ≈ 5e-6 typical of an 8192-term float32 sum, ≪ anything
  wrong (a lost block, an overflow, a flushed row: O(1) or inf). Zero rows must give exact zeros.
  float64 inputs stay float64: ``1e-12``.
* combine: ``|got − exact| ≤ c · (Σ_t |w_t|·|J_tk| + |β|·|out_k|)`` with c = 8·2⁻²⁴ (float32:
  float32 arithmetic over T ≤ 16 terms), 2⁻⁹ (float16) and 2⁻⁶ (bfloat16): the weights may be
  rounded to J's dtype (the reference does) or to float32 (the fast backends), and the result is
  rounded once to out's dtype (triton's interpreter truncates bfloat16, 2⁻⁷). float64: 1e-12.
* flatten: a copy, compared bit for bit with the reference's.
"""

from __future__ import annotations

import math

import pytest
import torch

from gradsurg._tolerances import COMBINE_C, GRAM_RTOL
from gradsurg.kernels import BACKENDS, Backend, get_backend, reference, unavailable_reason

NAMES = [name for name in BACKENDS if name != "auto"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# (T, P): P = 1 and primes around the block sizes (2053 > 2048, 65537 > 2^16), every T.
SHAPES = [(1, 1), (1, 13), (2, 1), (2, 2053), (3, 13), (3, 65537), (7, 1), (7, 2053), (16, 13), (16, 65537)]
LAYOUTS = ["contiguous", "strided", "every_other", "transposed", "stride0_cols", "stride0_rows"]


def _ids(value):
    return str(value).replace("torch.", "")


@pytest.fixture(params=NAMES)
def backend(request) -> tuple[Backend, torch.device]:
    """(backend, device of the tensors it is tested on); skipped where it cannot run."""
    name = request.param
    devices = (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    reasons = []
    for dev in devices:
        why = unavailable_reason(name, dev)
        if why is None:
            module = get_backend(name, dev)
            assert module.name == name
            return module, torch.device(dev)
        reasons.append(f"on {dev}: {why}")
    gpu = "" if torch.cuda.is_available() else "no CUDA GPU here (torch.cuda.is_available() is False); "
    pytest.skip(f"backend {name!r} cannot run: {gpu}{'; '.join(reasons)}")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _matrix(num_tasks, size, dtype, device, layout="contiguous", seed=0) -> torch.Tensor:
    """J (T, P) of ``dtype`` with correlated rows (off-diagonal entries far from 0), laid out as
    asked: the buffer is drawn, converted, and only then viewed, so the strides survive."""
    gen = _gen(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rows(width):  # (T, width) with a component shared by all rows
        return 0.6 * draw(1, width) + draw(num_tasks, width) + 0.1

    buffers = {
        "contiguous": (lambda: rows(size), lambda b: b),
        "strided": (lambda: rows(size + 7), lambda b: b[:, 3 : 3 + size]),  # rows not packed
        "every_other": (lambda: rows(2 * size), lambda b: b[:, ::2]),  # column stride 2
        "transposed": (lambda: rows(size).T.contiguous(), lambda b: b.T),  # column-major
        "stride0_cols": (lambda: draw(num_tasks, 1), lambda b: b.expand(num_tasks, size)),  # strides (1, 0)
        "stride0_rows": (lambda: draw(1, size), lambda b: b.expand(num_tasks, size)),  # strides (0, 1)
    }
    make, view = buffers[layout]
    return view(make().to(dtype).to(device))


def _oracle_gram(rows: torch.Tensor) -> torch.Tensor:
    """The reference's Gram of the same (rounded) inputs, in float64: exact up to float64."""
    return reference.gram(rows.detach().cpu().to(torch.float64))


def assert_gram_close(got: torch.Tensor, exact: torch.Tensor, rtol: float) -> None:
    assert got.dtype == torch.float64, got.dtype
    assert got.shape == exact.shape
    got = got.cpu()
    assert torch.equal(torch.isnan(got), torch.isnan(exact)), "NaN pattern differs from the reference"
    finite = torch.isfinite(exact)
    assert torch.equal(torch.isfinite(got), finite), f"non-finite entries differ:\n{got}\n{exact}"
    diag = exact.diagonal().abs()
    scale = torch.sqrt(diag[:, None] * diag[None, :])
    err = torch.where(finite, (got - exact).abs(), 0.0)
    bad = err > rtol * scale
    assert not bad.any(), (
        f"{int(bad.sum())} entries off by more than {rtol} × √(G_ii G_jj); worst "
        f"{(err / scale.clamp_min(1e-300)).max().item():.3g}\ngot:\n{got}\nexpected:\n{exact}"
    )


# --------------------------------------------------------------------------------------- gram


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("num_tasks,size", SHAPES)
def test_gram(backend, num_tasks, size, dtype):
    module, device = backend
    matrix = _matrix(num_tasks, size, dtype, device)
    got = module.gram(matrix)
    assert got.device == matrix.device
    assert_gram_close(got, _oracle_gram(matrix), GRAM_RTOL[dtype])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_ids)
@pytest.mark.parametrize("num_tasks,size", [(1, 13), (3, 2053), (7, 65537)])
def test_gram_layouts(backend, num_tasks, size, dtype, layout):
    module, device = backend
    matrix = _matrix(num_tasks, size, dtype, device, layout)
    assert_gram_close(module.gram(matrix), _oracle_gram(matrix), GRAM_RTOL[dtype])


@pytest.mark.parametrize("num_tasks,size", [(64, 257), (65, 31)])
def test_gram_many_tasks(backend, num_tasks, size):
    # 64 is the most the GPU Gram kernels take; 65 goes through their torch fallback.
    module, device = backend
    matrix = _matrix(num_tasks, size, torch.float32, device)
    assert_gram_close(module.gram(matrix), _oracle_gram(matrix), GRAM_RTOL[torch.float32])


def test_gram_zero_and_nan_rows(backend):
    module, device = backend
    matrix = _matrix(4, 3001, torch.float32, device).clone()
    matrix[1] = 0.0  # a zero row: exact zeros in G
    matrix[3, 1234] = float("nan")  # NaN propagates to its row and column, nowhere else
    got = module.gram(matrix)
    assert_gram_close(got, _oracle_gram(matrix), GRAM_RTOL[torch.float32])
    got = got.cpu()
    assert (got[1, :3] == 0).all() and torch.isnan(got[3]).all()  # 0 · NaN = NaN


# ----------------------------------------------------------- gram over the whole finite range
#
# float32 products overflow above ~1e19 and underflow below ~1e-22; the float64 reference does
# not. Rows of every binary scale a backend can meet must come out as accurate as ordinary ones.

RANGE = {  # dtype: the exponents k with 2^k·[-1, 1) finite and not all zero
    torch.float32: range(-149, 128),
    torch.bfloat16: range(-133, 128),
    torch.float16: range(-24, 16),
}


def _scaled_rows(exponents, size, dtype, device, seed=0) -> torch.Tensor:
    """Row t uniform in [-1, 1) · 2^exponents[t], rounded to ``dtype`` (subnormals included)."""
    base = torch.rand(len(exponents), size, generator=_gen(seed), dtype=torch.float64) * 2 - 1
    scale = torch.tensor([2.0**k for k in exponents], dtype=torch.float64)[:, None]
    return (base * scale).to(dtype).to(device)


@pytest.mark.parametrize("case", ["huge", "tiny"])
def test_gram_issue_examples(backend, case):
    # gradsurg.gramian([[1e20, 0], [0, 1]]) gave inf on cpp (the torch backend: 1e40); rows of
    # 1e-25 gave a zero Gram row.
    module, device = backend
    if case == "huge":
        matrix = torch.tensor([[1e20, 0.0], [0.0, 1.0]], device=device)
    else:
        matrix = torch.tensor([[1e-25, -2e-25, 3e-25], [1.0, 1.0, 0.5]], device=device)
    got = module.gram(matrix)
    assert_gram_close(got, _oracle_gram(matrix), 1e-6)
    assert got[0, 0].item() > 0 and math.isfinite(got[0, 0].item())


def _pairs(exponents, size, dtype, device, seed):
    """Two rows per exponent k: u·2^k and (u + v)/2·2^k, so G_ij is large off the diagonal too."""
    rows = _scaled_rows([k for k in exponents for _ in (0, 1)], size, torch.float64, "cpu", seed)
    rows[1::2] = 0.5 * (rows[0::2] + rows[1::2])
    return rows.to(dtype).to(device)


@pytest.mark.parametrize("dtype", list(RANGE), ids=_ids)
def test_gram_every_binary_scale(backend, dtype):
    # Every exponent k of the dtype's finite range, eight per matrix (a pair of rows each).
    module, device = backend
    ks = list(RANGE[dtype])
    for start in range(0, len(ks), 8):
        rows = _pairs(ks[start : start + 8], 64, dtype, device, seed=start)
        try:
            assert_gram_close(module.gram(rows), _oracle_gram(rows), GRAM_RTOL[dtype])
        except AssertionError as exc:
            raise AssertionError(f"rows scaled by 2^{ks[start : start + 8]}: {exc}") from None


SINGLE_SCALES = [-149, -148, -134, -133, -127, -126, -125, -101, -100, -76, -75, -51, -50, -49, -25, -24,
                 0, 15, 16, 49, 50, 51, 64, 100, 126, 127]  # fmt: skip


@pytest.mark.parametrize("dtype", list(RANGE), ids=_ids)
def test_gram_one_scale_per_matrix(backend, dtype):
    # All rows at one scale (nothing ordinary in the matrix), around every threshold the
    # backends use (2^±50 on GPUs, squares at 2^±100 on the CPU, subnormals, the largest).
    module, device = backend
    for k in (k for k in SINGLE_SCALES if k in RANGE[dtype]):
        rows = _pairs([k], 2053, dtype, device, seed=k + 200)
        try:
            assert_gram_close(module.gram(rows), _oracle_gram(rows), GRAM_RTOL[dtype])
        except AssertionError as exc:
            raise AssertionError(f"rows scaled by 2^{k}: {exc}") from None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_ids)
@pytest.mark.parametrize("size", [7, 4099])
def test_gram_mixed_scales_in_one_matrix(backend, dtype, size):
    module, device = backend
    exponents = [-149, -133, -126, -100, -75, -60, 0, 50, 64, 100, 126, 127]
    rows = _scaled_rows(exponents, size, dtype, device)
    assert_gram_close(module.gram(rows), _oracle_gram(rows), GRAM_RTOL[dtype])


def test_gram_scales_change_along_the_row(backend):
    # One row huge in some columns and tiny in others (blocks of one row at different scales);
    # another row ordinary; a third tiny everywhere.
    module, device = backend
    size = 20_000
    rows = _scaled_rows([0, 0, -140], size, torch.float32, device).clone()
    rows[0, : size // 2] *= 2.0**100
    rows[0, size // 2 :] *= 2.0**-120
    assert_gram_close(module.gram(rows), _oracle_gram(rows), GRAM_RTOL[torch.float32])


# --------------------------------------------------------------------------------- gram_lists

LIST_SHAPES = [(1,), (13,), (3, 5), (2053,), (2, 3, 4, 5), (1,), (65537,)]


def _task_lists(num_tasks, shapes, dtype, device, seed=0):
    gen = _gen(seed)
    return [[torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).to(device) for s in shapes] for _ in range(num_tasks)]


def _concat(grads) -> torch.Tensor:
    return torch.stack([torch.cat([g.detach().cpu().reshape(-1).double() for g in row]) for row in grads])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("num_tasks", [1, 2, 3, 7, 16])
def test_gram_lists(backend, num_tasks, dtype):
    module, device = backend
    grads = _task_lists(num_tasks, LIST_SHAPES, dtype, device)
    assert_gram_close(module.gram_lists(grads), _oracle_gram(_concat(grads)), GRAM_RTOL[dtype])


def test_gram_lists_layouts(backend):
    # Transposed, channels-last, sliced and stride-0 gradients, per task.
    module, device = backend
    gen = _gen(3)
    grads = []
    for _ in range(3):
        grads.append(
            [
                torch.randn(30, 20, generator=gen).to(device).T,
                torch.randn(4, 3, 5, 5, generator=gen).to(device).to(memory_format=torch.channels_last),
                torch.randn(20, 60, generator=gen).to(device)[:, ::3],
                torch.randn(1, generator=gen).to(device).expand(9),
                torch.randn(5, 1, generator=gen).to(device).expand(5, 7),
            ]
        )
    assert_gram_close(module.gram_lists(grads), _oracle_gram(_concat(grads)), GRAM_RTOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_ids)
def test_gram_lists_extreme_scales(backend, dtype):
    # Parameters at very different scales, and tasks at very different scales.
    module, device = backend
    task_exp = [0, -140, 120, -60]
    param_exp = [0, 100, -120, 7]
    sizes = [(5, 3), (2053,), (1,), (300,)]
    gen = _gen(5)
    grads = [
        [
            (
                (torch.rand(s, generator=gen, dtype=torch.float64) * 2 - 1)
                * 2.0 ** max(-149, min(127, te + pe))
            ).to(dtype).to(device)
            for s, pe in zip(sizes, param_exp)
        ]
        for te in task_exp
    ]
    assert_gram_close(module.gram_lists(grads), _oracle_gram(_concat(grads)), GRAM_RTOL[dtype])
    # The issue's example, one parameter per row.
    rows = [[torch.tensor([1e20, 0.0], device=device)], [torch.tensor([0.0, 1.0], device=device)]]
    assert_gram_close(module.gram_lists(rows), torch.tensor([[1e40, 0.0], [0.0, 1.0]], dtype=torch.float64), 1e-6)


# ------------------------------------------------------------------------------------ combine


def _assert_combine_close(got, start, matrix, weights, beta):
    dtype = matrix.dtype
    j = matrix.detach().cpu().double()
    w = weights.detach().cpu().double()
    exact = torch.zeros(j.shape[1], dtype=torch.float64) if start is None else start.cpu().double().clone()
    reference.combine_into(exact, j, w, beta=beta)  # the oracle, in float64
    bound = w.abs() @ j.abs()
    if beta != 0.0:
        bound = bound + abs(beta) * start.cpu().double().abs()
    tol = COMBINE_C[dtype] * bound
    got = got.cpu().double()
    assert torch.isfinite(got).all()
    err = (got - exact).abs()
    bad = err > tol
    assert not bad.any(), f"{int(bad.sum())} entries off, worst excess {(err - tol).max().item():.3g}"


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("num_tasks,size", SHAPES)
def test_combine(backend, num_tasks, size, dtype, beta):
    module, device = backend
    matrix = _matrix(num_tasks, size, dtype, device)
    weights = torch.randn(num_tasks, generator=_gen(1), dtype=torch.float64)  # CPU float64: converted
    if beta == 0.0:
        out = torch.full((size,), float("nan"), dtype=dtype, device=device)  # never read
        start = None
    else:
        out = _matrix(1, size, dtype, device, seed=3)[0].contiguous()
        start = out.clone()
    module.combine_into(out, matrix, weights, beta=beta)
    _assert_combine_close(out, start, matrix, weights, beta)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_combine_layouts(backend, layout, beta):
    module, device = backend
    matrix = _matrix(3, 2053, torch.float32, device, layout)
    weights = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float32, device=device)
    out = _matrix(1, 2053, torch.float32, device, seed=4)[0].contiguous()
    start = out.clone()
    module.combine_into(out, matrix, weights, beta=beta)
    _assert_combine_close(out, start, matrix, weights, beta)


# ------------------------------------------------------------------------------------ flatten


def _row_views(row: torch.Tensor, shapes):
    views, offset = [], 0
    for s in shapes:
        n = math.prod(s)
        views.append(row[offset : offset + n].view(s))
        offset += n
    return views


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_flatten(backend, dtype):
    module, device = backend
    gen = _gen(2)
    grads = [
        torch.randn(1, generator=gen),
        torch.randn(4, 3, generator=gen).T,  # transposed
        None,  # a parameter this task does not reach: zeros
        torch.randn(4, 3, 5, 5, generator=gen).to(memory_format=torch.channels_last),
        torch.randn(20, 60, generator=gen)[:, ::2],  # strided slice
        torch.randn(2053, generator=gen),
        torch.randn(1, generator=gen).expand(9),  # stride 0
        torch.randn(65537, generator=gen),
        torch.randn(13, generator=gen),
    ]
    shapes = [(1,), (3, 4), (7,), (4, 3, 5, 5), (20, 30), (2053,), (9,), (65537,), (13,)]
    grads = [None if g is None else g.to(dtype).to(device) for g in grads]
    grads[-1] = grads[-1].float() if dtype != torch.float32 else grads[-1].double()  # another dtype: cast
    total = sum(math.prod(s) for s in shapes)
    matrix = torch.full((3, total), 7.0, dtype=dtype, device=device)
    expected = matrix.clone()
    module.flatten_into(_row_views(matrix[1], shapes), grads)
    reference.flatten_into(_row_views(expected[1], shapes), grads)
    assert torch.equal(matrix.cpu(), expected.cpu())  # neighbouring rows untouched too


def test_flatten_all_missing(backend):
    module, device = backend
    shapes = [(5,), (1,), (1000,)]
    matrix = torch.full((1, 1006), float("nan"), device=device)
    module.flatten_into(_row_views(matrix[0], shapes), [None, None, None])
    assert torch.equal(matrix.cpu(), torch.zeros(1, 1006))
