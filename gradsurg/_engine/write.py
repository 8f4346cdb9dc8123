"""Write: the combined gradient into ``.grad``, accumulating like ``Tensor.backward``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._buffer import GradBuffer
from .._dtensor import local_view, wrap_grad

__all__ = ["combine_upcast", "combine_wide", "write_shared", "write_shared_subset", "write_specific"]

# Columns of a narrow J upcast at a time by combine_upcast (a T × 2^16 scratch).
_CHUNK = 1 << 16


def combine_upcast(out: Tensor, matrix: Tensor, weights: Tensor, *, beta: float = 0.0) -> None:
    """``out ← beta·out + wᵀ·J`` for a J stored narrower than ``out`` (``j_dtype``): products
    and sums in ``out``'s dtype, J upcast one column chunk at a time."""
    w = weights.to(device=out.device, dtype=out.dtype)
    for start in range(0, matrix.shape[1], _CHUNK):
        stop = min(start + _CHUNK, matrix.shape[1])
        part = out[start:stop]
        part.addmv_(matrix[:, start:stop].to(out.dtype).T, w, beta=beta)


def combine_wide(matrix: Tensor, weights: Tensor, dtype: torch.dtype) -> Tensor:
    """``wᵀ·J`` as a new ``dtype`` vector, the products and sums in float64 (one column chunk
    of J at a time): for weights beyond ``dtype``'s range whose products with J are within it."""
    w = weights.to(device=matrix.device, dtype=torch.float64)
    out = torch.empty(matrix.shape[1], device=matrix.device, dtype=dtype)
    for start in range(0, matrix.shape[1], _CHUNK):
        stop = min(start + _CHUNK, matrix.shape[1])
        out[start:stop] = (matrix[:, start:stop].to(torch.float64).T @ w).to(dtype)
    return out


def write_shared(buffer: GradBuffer, combine: Callable[[float], None]) -> None:
    """Call ``combine(beta)`` to write into the buffer's flat vector, then make the shared
    parameters' ``.grad`` its views.

    The views let the combination be written once, in place. Existing gradients are brought
    into the flat vector first so that ``combine`` can accumulate (``beta=1``) as
    ``Tensor.backward`` does; with no existing gradient it overwrites (``beta=0``).
    """
    write_shared_subset(buffer, list(range(len(buffer.params))), combine)


def write_shared_subset(buffer: GradBuffer, cols: list[int], combine: Callable[[float], None]) -> None:
    """:func:`write_shared` for some of the buffer's parameters (grouped surgery): ``combine``
    writes the views ``buffer.grads[j]`` of ``cols``."""
    params = [buffer.params[j] for j in cols]
    accumulate = any(p.grad is not None for p in params)
    if accumulate:
        for j, p in zip(cols, params):
            if p.grad is None:
                buffer.grads[j].zero_()
            elif not buffer.owns_grad(j, p.grad):
                buffer.grads[j].copy_(local_view(p.grad))
    combine(1.0 if accumulate else 0.0)
    for j, p in zip(cols, params):
        if p.grad is None or not buffer.owns_grad(j, p.grad):
            p.grad = wrap_grad(p, buffer.grads[j])


def write_specific(params: list[Tensor], specific: dict[int, Tensor], scale: float) -> None:
    """Add ``scale·g`` into ``params[k].grad`` for every ``k → g`` of ``specific``."""
    for k, g in specific.items():
        p = params[k]
        if scale != 1.0:
            g = g * scale
        local = local_view(p)
        if p.grad is not None:
            local_view(p.grad).add_(g)
        elif g.stride() == local.stride():
            p.grad = wrap_grad(p, g)
        else:
            # Gradients such as an expanded ones tensor (stride 0) cannot be modified in place
            # by the optimizer or clip_grad_norm_; give the parameter its own layout.
            p.grad = wrap_grad(p, torch.empty_like(local).copy_(g))
