"""Triton combine: ``out ← beta·out + Σ_t w_t·J[t]`` in one pass over J.

Each program owns ``BLOCK_P`` columns and walks the T rows ``ROWS`` at a time: a masked
``(ROWS, BLOCK_P)`` tile of J is upcast to float32 and reduced against the float32 weights, so
registers hold ROWS × BLOCK_P values whatever T is. ``beta == 0`` is a separate compiled variant
(``ACCUMULATE=False``) that never loads ``out``: NaN/inf left in it are overwritten, not
propagated. float64 J or out goes through torch (float32 arithmetic would lose precision).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import reference
from ._common import FLOAT_DTYPES, interp_block, interpreted

__all__ = ["combine_into"]

# GPU: 2048 columns × ≤4 rows per step over 8 warps: ≤32 tile values per thread, enough
# programs (P/2048) to fill the machine from P ≈ 1e6 on.
_GPU_BLOCK, _GPU_ROWS, _GPU_WARPS = 2048, 4, 8
# Interpreter: ~1 ms per program whatever its size, so ≤ ~32 column blocks and up to 16 rows.
_INTERP_TARGET_BLOCKS = 32
_INTERP_MIN_BLOCK, _INTERP_MAX_BLOCK = 1024, 1 << 15
_INTERP_ROWS = 16


@triton.jit
def _combine_kernel(
    OUT,
    J,
    W,
    beta,
    T,
    P,
    stride_t,
    stride_p,
    stride_o,
    ACCUMULATE: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    col_ok = cols < P
    acc = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for t0 in range(0, T, ROWS):
        rows = t0 + tl.arange(0, ROWS)
        row_ok = rows < T
        w = tl.load(W + rows, mask=row_ok, other=0.0)
        ptrs = J + rows.to(tl.int64)[:, None] * stride_t + cols[None, :] * stride_p
        a = tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.sum(w[:, None] * a.to(tl.float32), axis=0)
    if ACCUMULATE:
        old = tl.load(OUT + cols * stride_o, mask=col_ok, other=0.0)
        acc = beta * old.to(tl.float32) + acc
    tl.store(OUT + cols * stride_o, acc.to(OUT.dtype.element_ty), mask=col_ok)


def _config(num_tasks: int, size: int, interpreted: bool) -> tuple[int, int, int]:
    """(BLOCK_P, ROWS, num_warps)."""
    if interpreted:
        rows = min(_INTERP_ROWS, triton.next_power_of_2(num_tasks))
        return interp_block(size, _INTERP_TARGET_BLOCKS, _INTERP_MIN_BLOCK, _INTERP_MAX_BLOCK), rows, 4
    return _GPU_BLOCK, min(_GPU_ROWS, triton.next_power_of_2(num_tasks)), _GPU_WARPS


def _launch(out: Tensor, matrix: Tensor, w32: Tensor, beta: float, block: int, rows: int, warps: int) -> None:
    num_tasks, size = matrix.shape
    _combine_kernel[(triton.cdiv(size, block),)](
        out,
        matrix,
        w32,
        float(beta),
        num_tasks,
        size,
        matrix.stride(0),
        matrix.stride(1),
        out.stride(0),
        ACCUMULATE=beta != 0.0,
        ROWS=rows,
        BLOCK_P=block,
        num_warps=warps,
        enable_fp_fusion=True,
    )


def combine_into(out: Tensor, matrix: Tensor, weights: Tensor, *, beta: float = 0.0) -> None:
    """``out ← beta·out + wᵀ·J`` in place, in float32, stored in ``out``'s dtype.

    ``beta=0`` never reads ``out``. ``weights`` may be of any float dtype and on any device.
    """
    num_tasks, size = matrix.shape
    if out.shape != (size,):
        raise ValueError(f"combine_into: out has shape {tuple(out.shape)}, expected ({size},)")
    if weights.numel() != num_tasks:
        raise ValueError(f"combine_into: {weights.numel()} weights for {num_tasks} tasks")
    if matrix.dtype not in FLOAT_DTYPES or out.dtype not in FLOAT_DTYPES:
        reference.combine_into(out, matrix, weights, beta=beta)
        return
    if size == 0:
        return
    if num_tasks == 0:
        if beta == 0.0:
            out.zero_()
        else:
            out.mul_(beta)
        return
    w32 = weights.detach().reshape(-1).to(device=matrix.device, dtype=torch.float32).contiguous()
    block, rows, warps = _config(num_tasks, size, interpreted(_combine_kernel))
    _launch(out, matrix, w32, beta, block, rows, warps)
