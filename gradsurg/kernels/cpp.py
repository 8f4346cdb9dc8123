"""The C++ CPU backend (csrc/cpu, built as ``gradsurg._C``), loaded lazily.

Same semantics as :mod:`gradsurg.kernels.reference`. If the extension was not built (or
``GRADSURG_NO_EXT=1``), :func:`available` is False and ``backend="auto"`` falls back to the
torch backend with a one-time warning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType

from torch import Tensor

__all__ = ["NAME", "available", "combine_into", "flatten_into", "gram", "gram_lists", "load_error"]

NAME = "cpp"

_module: ModuleType | None = None
_error: str | None = None


def _load() -> ModuleType | None:
    global _module, _error
    if _module is None and _error is None:
        if os.environ.get("GRADSURG_NO_EXT") == "1":
            _error = "GRADSURG_NO_EXT=1 is set"
        else:
            try:
                import torch  # noqa: F401  (the extension needs torch's symbols loaded first)

                from .. import _C

                _module = _C
            except ImportError as exc:
                _error = f"the C++ extension gradsurg._C is not built ({exc})"
    return _module


def available() -> bool:
    """Whether the compiled CPU kernels can be used."""
    return _load() is not None


def load_error() -> str | None:
    """Why the extension is unavailable, or None."""
    _load()
    return _error


def _lib() -> ModuleType:
    module = _load()
    if module is None:
        raise RuntimeError(
            f"backend: 'cpp' is unavailable: {_error}. Rebuild with "
            "`pip install --no-build-isolation -e .` after installing torch."
        )
    return module


def flatten_into(dst: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Copy one task's gradients into its row views of J; None writes zeros."""
    _lib().flatten_into(list(dst), list(grads))


def gram(matrix: Tensor) -> Tensor:
    """G = J·Jᵀ in float64: fp32 products per 2048-column block, float64 across blocks."""
    return _lib().gram(matrix)


def gram_lists(grads: Sequence[Sequence[Tensor]]) -> Tensor:
    """G from per-task lists of per-parameter gradients, without building J."""
    return _lib().gram_lists([list(row) for row in grads])


def combine_into(out: Tensor, matrix: Tensor, weights: Tensor, *, beta: float = 0.0) -> None:
    """``out ← beta·out + wᵀ·J`` in place (``beta=0`` never reads ``out``)."""
    _lib().combine_into(out, matrix, weights.cpu(), float(beta))
