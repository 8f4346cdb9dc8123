"""Pure-PyTorch kernels: the oracle every faster backend is tested against, and the fallback.

Three operations make up the heavy part of a surgery step, each one pass over J (T×P):
``flatten_into`` (task gradients → a row of J), ``gram`` (G = J·Jᵀ in float64) and
``combine_into`` (wᵀ·J written into a flat gradient buffer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["combine_into", "flatten_into", "gram", "gram_lists", "name"]

#: The backend's name (``Backend.name``).
name = "torch"

# Columns of J upcast to float64 at a time: large enough that the matmul dominates the Python
# loop, small enough that the float64 scratch (T × 2^16 × 8 bytes, 4 MiB at T=8) stays in cache
# and does not double the memory of J.
_CHUNK = 1 << 16


def flatten_into(dst: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Copy each gradient into its view of a row of J; a ``None`` gradient writes zeros.

    Args:
        dst: views of one row of J, shaped like the parameters.
        grads: gradients of one task (any strides), or ``None`` where the task does not reach
            the parameter.
    """
    present_dst = [d for d, g in zip(dst, grads) if g is not None]
    present_src = [g for g in grads if g is not None]
    if present_dst:
        torch._foreach_copy_(present_dst, present_src)
    missing = [d for d, g in zip(dst, grads) if g is None]
    if missing:
        torch._foreach_zero_(missing)


def gram(matrix: Tensor) -> Tensor:
    """G = J·Jᵀ accumulated in float64.

    A single float32 matmul over 1e7 columns is off by ~2e-3 relative on our CPUs (its partial
    sums are float32), so lower precisions are upcast chunk by chunk into a float64 scratch.

    The upcast also makes the result right over the whole finite float32 range: float64 holds
    every product of two float32 values (subnormals ~1e-45 to 3.4e38) exactly in range, where
    float32 products overflow above ~1e19 and underflow below ~1e-22. The faster backends keep
    float32 products for speed and therefore rescale out-of-range rows by powers of two to
    match this (see cpp/triton/cuda); float64 inputs beyond the float32 range are the float64
    matmul's.

    Args:
        matrix: J of shape ``(T, P)``, any floating dtype.

    Returns:
        float64 ``(T, T)`` on ``matrix.device``.
    """
    num_tasks, size = matrix.shape
    if matrix.dtype == torch.float64:
        return matrix @ matrix.T
    out = torch.zeros(num_tasks, num_tasks, dtype=torch.float64, device=matrix.device)
    scratch = torch.empty(num_tasks, min(_CHUNK, size), dtype=torch.float64, device=matrix.device)
    for start in range(0, size, _CHUNK):
        stop = min(start + _CHUNK, size)
        block = scratch[:, : stop - start]
        block.copy_(matrix[:, start:stop])
        out.addmm_(block, block.T)
    return out


def gram_lists(grads: Sequence[Sequence[Tensor]]) -> Tensor:
    """G from per-task lists of per-parameter gradients, without building J.

    Args:
        grads: ``grads[t][k]`` is task ``t``'s gradient of parameter ``k``; every task lists the
            same shapes.

    Returns:
        float64 ``(T, T)``: the sum over parameters of each parameter's Gram matrix.
    """
    num_tasks = len(grads)
    device = grads[0][0].device
    out = torch.zeros(num_tasks, num_tasks, dtype=torch.float64, device=device)
    for k in range(len(grads[0])):
        block = torch.stack([grads[t][k].reshape(-1) for t in range(num_tasks)])
        out += gram(block)
    return out


def combine_into(out: Tensor, matrix: Tensor, weights: Tensor, *, beta: float = 0.0) -> None:
    """``out ← beta·out + wᵀ·J`` in place.

    Args:
        out: flat buffer of shape ``(P,)`` (the shared parameters' ``.grad`` are views of it).
        matrix: J of shape ``(T, P)``.
        weights: ``(T,)``; cast to J's dtype and device.
        beta: 0 overwrites ``out`` (NaN/inf already there are not propagated), 1 accumulates.
    """
    w = weights.to(device=matrix.device, dtype=matrix.dtype)
    out.addmv_(matrix.T, w, beta=beta)
