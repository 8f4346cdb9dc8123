"""How the check prints: lines flushed at once (the output is read live, or pasted back whole),
and the short forms of dtypes, sizes and bandwidths its lines and tables use."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["dtype_name", "fmt_gbps", "fmt_grid", "fmt_size", "say"]


def say(*parts: object) -> None:
    """``print``, flushed: a part that hangs must not hide the lines before it."""
    print(*parts, flush=True)


def dtype_name(dtype: torch.dtype) -> str:
    """fp32, bf16, fp16, fp64, else torch's name without the ``torch.`` prefix."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}.get(
        dtype, str(dtype).replace("torch.", "")
    )


def fmt_size(size: int) -> str:
    """1 → '1', 1000 → '1e3', 1_000_000 → '1e6', 12345 → '12345'."""
    if size >= 1000 and size == 10 ** round(math.log10(size)):
        return f"1e{round(math.log10(size))}"
    return str(size)


def fmt_gbps(value: float) -> str:
    """GB/s with three significant digits, whole numbers from 100 on."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def fmt_grid(values: Sequence[int]) -> str:
    """``{1, 1e3, 1e6}``: a grid's values as --help prints them."""
    return "{" + ", ".join(fmt_size(v) for v in values) + "}"
