"""Triton flatten: copy one task's gradients into its row of J in a single launch.

The host builds one int64 table on the device: per tensor (source data_ptr or 0 for "write
zeros", numel, destination offset in elements), then per work item (tensor index, chunk index).
Each program copies one ``BLOCK``-element chunk of one tensor, so a 1-element bias and a
10⁷-element weight cost one and ~2500 programs respectively, in the same launch.

Gradients that are not contiguous (e.g. channels-last, transposed), not of J's dtype or not on
J's device are copied by torch straight into their views (one pass, no temporary).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import TL_DTYPE, interp_block, interpreted, require_cpu_under_interpreter

__all__ = ["flatten_into"]

# GPU: 4096 elements per program over 8 warps = 16 per thread (four 16-byte vectors in fp32).
_GPU_BLOCK, _GPU_WARPS = 4096, 8
# Interpreter: ~1 ms per program whatever its size; ≤ ~32 chunks for the largest tensor.
_INTERP_TARGET_CHUNKS = 32
_INTERP_MIN_BLOCK, _INTERP_MAX_BLOCK = 1024, 1 << 16

_TABLE_WIDTH = 3  # src pointer, numel, dst offset
_WORK_WIDTH = 2  # tensor index, chunk index


@triton.jit
def _flatten_kernel(DST, TABLE, WORK, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    k = tl.load(WORK + pid * 2)
    chunk = tl.load(WORK + pid * 2 + 1)
    src_addr = tl.load(TABLE + k * 3)
    numel = tl.load(TABLE + k * 3 + 1)
    dst_off = tl.load(TABLE + k * 3 + 2)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    src = src_addr.to(tl.pointer_type(DTYPE))
    # A null source pointer means "no gradient": nothing is loaded and zeros are stored.
    src_numel = tl.where(src_addr != 0, numel, 0)
    vals = tl.load(src + offs, mask=offs < src_numel, other=0.0)
    tl.store(DST + dst_off + offs, vals, mask=mask)


def _block_for(largest: int, interpreted: bool) -> tuple[int, int]:
    if not interpreted:
        return _GPU_BLOCK, _GPU_WARPS
    return interp_block(largest, _INTERP_TARGET_CHUNKS, _INTERP_MIN_BLOCK, _INTERP_MAX_BLOCK), 4


def _launch(dst: Sequence[Tensor], srcs: Sequence[Tensor | None], block: int, num_warps: int) -> None:
    """Copy ``srcs[i]`` (contiguous, dst's dtype/device, or None → zeros) into ``dst[i]``
    (contiguous views of one buffer), in one launch."""
    base = min(dst, key=lambda d: d.data_ptr())
    base_addr, itemsize = base.data_ptr(), base.element_size()
    table = torch.tensor(
        [
            [0 if s is None else s.data_ptr(), d.numel(), (d.data_ptr() - base_addr) // itemsize]
            for d, s in zip(dst, srcs)
        ],
        dtype=torch.int64,
    )
    counts = (table[:, 1] + block - 1) // block
    index = torch.repeat_interleave(torch.arange(len(dst)), counts)
    first = torch.cumsum(counts, 0) - counts
    chunk = torch.arange(index.numel()) - first[index]
    work = torch.stack([index, chunk], dim=1)
    tables = torch.cat([table.reshape(-1), work.reshape(-1)]).to(base.device)
    # Row base: a 1-D view starting at the lowest destination (offsets are relative to it).
    row = base.reshape(-1)
    _flatten_kernel[(work.shape[0],)](
        row,
        tables,
        tables[table.numel() :],
        DTYPE=TL_DTYPE[base.dtype],
        BLOCK=block,
        num_warps=num_warps,
        enable_fp_fusion=True,
    )


def flatten_into(dst: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Copy each gradient into its view of a row of J; ``None`` writes zeros (one launch)."""
    if len(dst) != len(grads):
        raise ValueError(f"flatten_into: {len(dst)} destinations but {len(grads)} gradients")
    fast_dst: list[Tensor] = []
    fast_src: list[Tensor | None] = []
    for d, g in zip(dst, grads):
        if d.numel() == 0:
            continue
        kernel_ok = d.is_contiguous() and d.dtype in TL_DTYPE and (
            g is None
            or (g.is_contiguous() and g.shape == d.shape and g.dtype == d.dtype and g.device == d.device)
        )
        if kernel_ok and (fast_dst and (d.device != fast_dst[0].device or d.dtype != fast_dst[0].dtype)):
            kernel_ok = False
        if kernel_ok:
            fast_dst.append(d)
            fast_src.append(g)
        elif g is None:
            d.zero_()
        else:
            d.copy_(g)
    if not fast_dst:
        return
    interp = interpreted(_flatten_kernel)
    if interp:
        require_cpu_under_interpreter(fast_dst[0].device, "flatten_into", "tensors")
    block, warps = _block_for(max(d.numel() for d in fast_dst), interp)
    _launch(fast_dst, fast_src, block, warps)
