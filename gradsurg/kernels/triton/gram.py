"""Triton Gram kernels: G = J·Jᵀ (from J, or from per-task lists of per-parameter gradients).

Each program walks a strided set of column tiles. A tile (``T_PAD`` rows × ``TILE_P`` columns,
masked) is upcast to float32 right after the load, its Gram is one ``tl.dot`` in IEEE float32
(``input_precision="ieee"``: TF32 would keep only 10 mantissa bits), and the tile Grams are
accumulated in float64 registers. Every program writes one float64 ``(T, T)`` partial; the host
sums the partials in float64, in a fixed order, so the result is deterministic and its float32
rounding is that of one tile (``TILE_P`` columns), whatever P is.

When every program gets a single tile (small P, or the interpreter) this is exactly "one float32
partial per column block, summed on the host in float64": the float64 conversion of a float32
value is exact. Bounding the grid (a few programs per SM) bounds the partials' memory for huge P.

Range. float32 products overflow for entries ≳ 1e19 and lose their digits (subnormal) or flush to
0 for entries ≲ 1e-22: a row of 1e20 would give G = inf, a row of 1e-25 a zero Gram row, where
the float64 reference is exact. So each tile's rows are measured first (max |x| per row, cheap
next to the T_PAD-fold reuse of the tile in the dot): a tile whose rows all have max |x| in
[2^-50, 2^50) (or are zero, or hold inf/NaN, which must propagate) is used as loaded — products
≤ 2^100 · TILE_P cannot overflow, and what underflow loses (≤ 2^-150 per product) is ≤ 2^-36 of
the rows' scale. Any other row is multiplied by an exact power of two 2^s (a normal float32
built from exponent bits) that brings its max |x| into [2, 4) (large rows) or [2^-23, 2^-22)
(small rows: two targets keep |s| ≤ 126 over the whole float32 range), and the tile Gram is
multiplied back by 2^-(s_i + s_j) in float64: every finite float32 input (subnormals to 3.4e38,
rows of very different scales in one tile) gets the accuracy of ordinary inputs. The scaling
relies on float32 subnormals not being flushed (no ``.ftz`` in the PTX; tests/triton/
test_triton_aot.py checks), and bfloat16 is widened by a shift (``_common.to_float32``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import reference
from ._common import (
    FLOAT_DTYPES,
    MAX_TASKS,
    MIN_PAD,
    interp_block,
    interpreted,
    require_cpu_under_interpreter,
    t_pad,
    to_float32,
    use_reference,
)

__all__ = ["MAX_TASKS", "gram", "gram_lists"]

# Interpreter (CPU tensors, TRITON_INTERPRET=1): each program costs ~1 ms of Python whatever its
# size, while numpy's matmul on a big tile is cheap, so tiles are as large as P allows (≤ ~32
# tiles) and the grid stays ≤ 256 programs.
_INTERP_TARGET_TILES = 32
_INTERP_MAX_TILE = 1 << 13
_INTERP_MAX_PROGRAMS = 256


def _gpu_tile(t_pad: int) -> tuple[int, int]:
    """(TILE_P, num_warps) for a GPU.

    The IEEE float32 dot runs on FMA units (no tensor cores); A (T_PAD × TILE_P) is staged in
    shared memory, the float32 tile Gram and the float64 accumulator (T_PAD² each) live in
    registers. With these sizes ptxas (triton 3.9) reports, for sm_80/sm_90 and both kernels,
    72-128 registers at T_PAD=16, 101-128 at 32 and 170-184 at 64, no spills (tests/triton/
    test_triton_aot.py checks); larger tiles at T_PAD ≥ 32 go to 255 registers or spill. The
    per-row range check and rescale of ``_tile_gram`` cost ~40 registers (34-64 / 64-92 /
    126-153 before it; branch-free and one-branch variants were no better, or spilled on
    sm_90): at T_PAD = 16 the grid (4 programs per SM) still fits in registers, at T_PAD ≥ 32
    one fewer program per SM may be resident. Not benchmarked on hardware (no GPU here).
    """
    return {16: (128, 4), 32: (64, 8), 64: (32, 8)}[t_pad]


@cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _max_programs(device: torch.device, interpreted: bool) -> int:
    if interpreted:
        return _INTERP_MAX_PROGRAMS
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return 4 * _sm_count(index)
    return 512


def _config(num_tasks: int, size: int, device: torch.device, interpreted: bool) -> tuple[int, int, int]:
    """(TILE_P, num_warps, max programs) for a Gram over ``size`` columns."""
    if interpreted:
        tile = interp_block(size, _INTERP_TARGET_TILES, MIN_PAD, _INTERP_MAX_TILE)
        return tile, 4, _max_programs(device, True)
    tile, warps = _gpu_tile(t_pad(num_tasks))
    return tile, warps, _max_programs(device, False)


@triton.jit
def _pow2(k):
    """2^k as float32 for integer k in [-126, 127], exact (built from the exponent bits)."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _tile_gram(a):
    """Float64 Gram of a float32 tile ``a`` (T_PAD × TILE_P), exact over the whole float32 range.

    Rows with max |x| in [2^e, 2^(e+1)) outside [2^-50, 2^50) are scaled by 2^s, s = 1 - e for
    large rows (max into [2, 4)) and s = -23 - e for small ones (max into [2^-23, 2^-22)), so
    s ∈ [-126, 126] is one normal float32 factor; the float64 dot is scaled back by 2^-(s_i + s_j).
    Tiles with no such row are not touched: they give bit for bit the plain float32 dot. See
    the module docstring.
    """
    amax = tl.max(tl.abs(a), axis=1)
    bits = amax.to(tl.int32, bitcast=True)
    # e = floor(log2(amax)) from the bits. A subnormal is bits · 2^-149 with bits < 2^23, so its
    # exponent is that of float(bits) (exact) minus 149.
    e_sub = (bits.to(tl.float32).to(tl.int32, bitcast=True) >> 23) - 127 - 149
    e = tl.where(bits < 0x00800000, e_sub, (bits >> 23) - 127)
    # Zero rows and inf/NaN rows (bits >= 0x7F800000) keep s = 0, so inf/NaN propagate.
    rescale = (bits > 0) & (bits < 0x7F800000) & ((e < -50) | (e > 49))
    s = tl.where(rescale, tl.where(e > 0, 1 - e, -23 - e), 0)
    # Ordinary tiles skip both rescales (branches rather than multiplies by 1.0: of the variants
    # tried, the only one without spills on sm_80 and sm_90, see _gpu_tile).
    if tl.max(rescale.to(tl.int32), axis=0) != 0:
        a = a * _pow2(s)[:, None]
    g = tl.dot(a, tl.trans(a), input_precision="ieee").to(tl.float64)
    if tl.max(rescale.to(tl.int32), axis=0) != 0:
        back = 1.0 / _pow2(s).to(tl.float64)  # 2^-s, exact
        g = g * (back[:, None] * back[None, :])
    return g


@triton.jit
def _gram_kernel(
    J,
    PART,
    T,
    P,
    stride_t,
    stride_p,
    num_tiles,
    T_PAD: tl.constexpr,
    TILE_P: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    rows = tl.arange(0, T_PAD)
    cols = tl.arange(0, TILE_P)
    row_ok = rows < T
    row_off = rows.to(tl.int64) * stride_t
    acc = tl.zeros((T_PAD, T_PAD), dtype=tl.float64)
    for tile in range(pid, num_tiles, nprog):
        c = tl.cast(tile, tl.int64) * TILE_P + cols
        mask = row_ok[:, None] & (c < P)[None, :]
        a = tl.load(J + row_off[:, None] + c[None, :] * stride_p, mask=mask, other=0.0)
        acc += _tile_gram(to_float32(a))
    out = PART + pid.to(tl.int64) * T * T + rows[:, None] * T + rows[None, :]
    tl.store(out, acc, mask=row_ok[:, None] & row_ok[None, :])


@triton.jit
def _gram_lists_kernel(
    ROW_PTRS,
    WORK,
    PART,
    T,
    num_items,
    DTYPE: tl.constexpr,
    T_PAD: tl.constexpr,
    TILE_P: tl.constexpr,
):
    # ROW_PTRS: int64 (K, T), the data_ptr of task t's (contiguous) gradient of parameter k.
    # WORK: int64 (num_items, 3) = (k, first column, number of columns) of a chunk of parameter k.
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    rows = tl.arange(0, T_PAD)
    cols = tl.arange(0, TILE_P)
    row_ok = rows < T
    acc = tl.zeros((T_PAD, T_PAD), dtype=tl.float64)
    for item in range(pid, num_items, nprog):
        k = tl.load(WORK + item * 3)
        start = tl.load(WORK + item * 3 + 1)
        length = tl.load(WORK + item * 3 + 2)
        stop = start + length
        addr = tl.load(ROW_PTRS + k * T + rows, mask=row_ok, other=0)
        base = addr.to(tl.pointer_type(DTYPE))
        for j in range(0, length, TILE_P):
            c = start + j + cols
            mask = row_ok[:, None] & (c < stop)[None, :]
            a = tl.load(base[:, None] + c[None, :], mask=mask, other=0.0)
            acc += _tile_gram(to_float32(a))
    out = PART + pid.to(tl.int64) * T * T + rows[:, None] * T + rows[None, :]
    tl.store(out, acc, mask=row_ok[:, None] & row_ok[None, :])


def _launch_gram(matrix: Tensor, tile_p: int, num_warps: int, max_programs: int) -> Tensor:
    num_tasks, size = matrix.shape
    num_tiles = triton.cdiv(size, tile_p)
    nprog = max(1, min(num_tiles, max_programs))
    part = torch.empty(nprog, num_tasks, num_tasks, dtype=torch.float64, device=matrix.device)
    _gram_kernel[(nprog,)](
        matrix,
        part,
        num_tasks,
        size,
        matrix.stride(0),
        matrix.stride(1),
        num_tiles,
        T_PAD=t_pad(num_tasks),
        TILE_P=tile_p,
        num_warps=num_warps,
        enable_fp_fusion=True,
    )
    return part.sum(0)


def gram(matrix: Tensor) -> Tensor:
    """G = J·Jᵀ in float64 for J ``(T, P)``: float32 tile Grams (rows rescaled by powers of two
    where their range needs it), float64 accumulation.

    float64 J (and T > 64, or T = 0/P = 0) goes through torch.
    """
    num_tasks, size = matrix.shape
    if use_reference(num_tasks, matrix.dtype) or num_tasks == 0 or size == 0:
        return reference.gram(matrix)
    tile, warps, max_programs = _config(num_tasks, size, matrix.device, interpreted(_gram_kernel))
    return _launch_gram(matrix, tile, warps, max_programs)


def _launch_gram_lists(
    rows: Sequence[Sequence[Tensor]],
    dtype: torch.dtype,
    tile_p: int,
    num_warps: int,
    max_programs: int,
    chunk: int,
) -> Tensor:
    """One launch over every parameter of ``rows[t][k]`` (contiguous tensors of ``dtype``)."""
    num_tasks, num_params = len(rows), len(rows[0])
    device = rows[0][0].device
    ptrs = torch.tensor(
        [[rows[t][k].data_ptr() for t in range(num_tasks)] for k in range(num_params)], dtype=torch.int64
    )
    numels = torch.tensor([rows[0][k].numel() for k in range(num_params)], dtype=torch.int64)
    # Work items: chunks of ≤ `chunk` columns of one parameter, built without a Python loop.
    counts = (numels + chunk - 1) // chunk
    param = torch.repeat_interleave(torch.arange(num_params), counts)
    first = torch.cumsum(counts, 0) - counts
    start = (torch.arange(param.numel()) - first[param]) * chunk
    length = torch.minimum(numels[param] - start, torch.full_like(start, chunk))
    work = torch.stack([param, start, length], dim=1)
    num_items = work.shape[0]
    nprog = max(1, min(num_items, max_programs))
    # One host→device copy for both tables.
    tables = torch.cat([ptrs.reshape(-1), work.reshape(-1)]).to(device)
    part = torch.empty(nprog, num_tasks, num_tasks, dtype=torch.float64, device=device)
    _gram_lists_kernel[(nprog,)](
        tables,
        tables[ptrs.numel() :],
        part,
        num_tasks,
        num_items,
        DTYPE=FLOAT_DTYPES[dtype],
        T_PAD=t_pad(num_tasks),
        TILE_P=tile_p,
        num_warps=num_warps,
        enable_fp_fusion=True,
    )
    return part.sum(0)


def gram_lists(grads: Sequence[Sequence[Tensor]]) -> Tensor:
    """G from ``grads[t][k]`` (task t's gradient of parameter k) without building J.

    Parameters are grouped by dtype (one launch per float32/float16/bfloat16 group; float64 ones
    go through torch); non-contiguous gradients are made contiguous first.
    """
    num_tasks = len(grads)
    if num_tasks == 0:
        raise ValueError("gram_lists: no tasks")
    num_params = len(grads[0])
    if any(len(row) != num_params for row in grads):
        raise ValueError("gram_lists: every task must list the same parameters")
    device = grads[0][0].device if num_params else torch.device("cpu")
    out = torch.zeros(num_tasks, num_tasks, dtype=torch.float64, device=device)
    groups: dict[torch.dtype, list[int]] = {}
    for k in range(num_params):
        numel = grads[0][k].numel()
        if any(grads[t][k].numel() != numel for t in range(num_tasks)):
            raise ValueError(f"gram_lists: parameter {k} has gradients of different sizes across tasks")
        if numel:
            groups.setdefault(grads[0][k].dtype, []).append(k)
    interp = interpreted(_gram_lists_kernel)
    for dtype, ks in groups.items():
        if use_reference(num_tasks, dtype) or any(grads[t][k].dtype != dtype for k in ks for t in range(num_tasks)):
            out += reference.gram_lists([[grads[t][k] for k in ks] for t in range(num_tasks)])
            continue
        if interp:
            require_cpu_under_interpreter(device, "gram_lists", "gradients")
        rows = [[grads[t][k].contiguous() for k in ks] for t in range(num_tasks)]
        size = sum(rows[0][i].numel() for i in range(len(ks)))
        tile, warps, max_programs = _config(num_tasks, size, device, interp)
        # Interpreter: one tile per chunk; GPU: 64 tiles per chunk keeps the work table small.
        chunk = tile if interp else 64 * tile
        out += _launch_gram_lists(rows, dtype, tile, warps, max_programs, chunk)
    return out
