"""The CUDA backend (csrc/cuda, built as ``gradsurg._cuda``), loaded lazily.

Same semantics as :mod:`gradsurg.kernels.reference`, on CUDA tensors:

- ``flatten_into`` copies all of a task's gradients into its row of J in one kernel launch;
- ``gram`` / ``gram_lists`` accumulate fp32 partial dot products per column chunk into float64
  (relative error ~1e-7 for float32 inputs, as the ``cpp`` backend; the torch reference is
  float64 throughout). Rows of a chunk whose max |x| is outside [2^-50, 2^50) (where fp32
  products would overflow, ≳ 1e19, or underflow, ≲ 1e-22) are scaled by exact powers of two
  before the products and scaled back in float64, so the Gram matches the float64 reference
  over the whole finite fp32/bf16 range (csrc/cuda/gram.cu);
- ``combine_into`` uses float32 weights (float64 for float64 J) instead of rounding them to J's
  dtype first.

The extension is built only where torch has CUDA and a CUDA toolkit is found (see setup.py).
Importing this module never imports the extension: :func:`available` does, on first use. On a
machine without it (or with ``GRADSURG_NO_EXT=1``, or without a visible GPU) :func:`available` is
False and every kernel raises a RuntimeError that says how to build it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import reference
from ._extension import LazyExtension

__all__ = [
    "MAX_TASKS",
    "available",
    "combine_into",
    "flatten_into",
    "gram",
    "gram_lists",
    "load_error",
    "name",
]

#: The backend's name (``Backend.name``).
name = "cuda"

#: Most tasks (rows of J) the CUDA Gram kernels take (GS_MAX_TASKS in csrc/cuda/common.cuh);
#: more tasks fall back to the torch reference for ``gram`` and ``gram_lists``.
MAX_TASKS = 64

_BUILD_HINT = (
    "Build it on a machine with a CUDA build of torch and a CUDA toolkit (CUDA_HOME or nvcc on "
    "PATH): install torch first, then `pip install --no-build-isolation -e .` (setup.py then "
    "compiles csrc/cuda into gradsurg._cuda)."
)

def _cuda_torch() -> str | None:
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    return None


_EXT = LazyExtension("cuda", "_cuda", _BUILD_HINT, _cuda_torch)


def available() -> bool:
    """Whether the CUDA kernels can be used: the extension is built and a GPU is visible."""
    return _EXT.load() is not None and torch.cuda.is_available()


def load_error() -> str | None:
    """Why the backend is unavailable, or None."""
    if _EXT.load() is None:
        return _EXT.error
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    return None


def flatten_into(dst: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Copy one task's gradients into its row views of J (one launch); None writes zeros."""
    lib = _EXT.require()
    lib.flatten_into(list(dst), [None if g is None else g.contiguous() for g in grads])


def gram(matrix: Tensor) -> Tensor:
    """G = J·Jᵀ in float64: fp32 partial dot products per column chunk, float64 across chunks."""
    lib = _EXT.require()
    if matrix.dim() == 2 and matrix.shape[0] > MAX_TASKS:
        return reference.gram(matrix)
    return lib.gram(matrix)


def gram_lists(grads: Sequence[Sequence[Tensor]]) -> Tensor:
    """G from per-task lists of per-parameter gradients, without building J."""
    lib = _EXT.require()
    if len(grads) > MAX_TASKS:
        return reference.gram_lists(grads)
    return lib.gram_lists([[g.contiguous() for g in row] for row in grads])


def combine_into(out: Tensor, matrix: Tensor, weights: Tensor, *, beta: float = 0.0) -> None:
    """``out ← beta·out + wᵀ·J`` in place (``beta=0`` never reads ``out``)."""
    _EXT.require().combine_into(out, matrix, weights, float(beta))
