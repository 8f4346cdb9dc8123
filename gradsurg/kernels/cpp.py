"""The C++ CPU backend (csrc/cpu, built as ``gradsurg._C``), loaded lazily.

Same semantics as :mod:`gradsurg.kernels.reference` (the Gram included over the whole finite
fp32 range, see :func:`gram`). If the extension was not built (or
``GRADSURG_NO_EXT=1``), :func:`available` is False and ``backend="auto"`` falls back to the
torch backend with a one-time warning.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ._extension import LazyExtension

__all__ = ["available", "combine_into", "flatten_into", "gram", "gram_lists", "load_error", "name"]

#: The backend's name (``Backend.name``).
name = "cpp"

_EXT = LazyExtension(
    "cpp", "_C", "Rebuild with `pip install --no-build-isolation -e .` after installing torch."
)


def available() -> bool:
    """Whether the compiled CPU kernels can be used."""
    return _EXT.load() is not None


def load_error() -> str | None:
    """Why the extension is unavailable, or None."""
    return _EXT.error


def flatten_into(dst: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Copy one task's gradients into its row views of J; None writes zeros."""
    _EXT.require().flatten_into(list(dst), list(grads))


def gram(matrix: Tensor) -> Tensor:
    """G = J·Jᵀ in float64: fp32 products per column block (≤ 3072 columns), float64 across blocks.

    fp32 products alone would overflow for entries ≳ 1e19 and lose tiny rows (≲ 1e-22) to
    underflow, so a block whose fp32 sums of squares leave [2^-100, 2^100] is recomputed with
    its offending rows scaled by exact powers of two and scaled back in float64: the result
    matches the float64 reference over the whole finite fp32 range, at no cost on ordinary
    inputs (csrc/cpu/gram.cpp).
    """
    return _EXT.require().gram(matrix)


def gram_lists(grads: Sequence[Sequence[Tensor]]) -> Tensor:
    """G from per-task lists of per-parameter gradients, without building J."""
    return _EXT.require().gram_lists([list(row) for row in grads])


def combine_into(out: Tensor, matrix: Tensor, weights: Tensor, *, beta: float = 0.0) -> None:
    """``out ← beta·out + wᵀ·J`` in place (``beta=0`` never reads ``out``)."""
    _EXT.require().combine_into(out, matrix, weights.cpu(), float(beta))
