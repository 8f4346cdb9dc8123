"""The sweep's inputs: J in three layouts, rows at extreme scales over each dtype's whole finite
range, and per-task gradients laid out as a real model's can be (transposed, strided, stride-0,
another dtype, missing)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["EXTREME_SCALES", "generator", "make_grads", "make_matrix", "param_specs", "row_views", "scaled_rows"]

#: Row scales of the extreme-range Gram cases, per dtype: the dtype's whole finite range.
EXTREME_SCALES: dict[torch.dtype, dict[str, list[float]]] = {
    torch.float32: {
        "mixed": [1e-30, 1e30, 1.0, 2.0**-149, 2.0**-126, 1e-38, 1e38, 2.0**127],
        "all 1e-30": [1e-30] * 4,
        "all 1e30": [1e30] * 4,
        "all 2^-149": [2.0**-149] * 4,
        "all 2^127": [2.0**127] * 4,
    },
    torch.float16: {
        "mixed": [2.0**-24, 2.0**-14, 1.0, 2.0**15, 1e-3, 1e4],
        "all 2^-24": [2.0**-24] * 4,
        "all 2^15": [2.0**15] * 4,
    },
}
# bfloat16 has float32's exponent range but 7 mantissa bits: its smallest subnormal is 2^-133.
EXTREME_SCALES[torch.bfloat16] = {
    label.replace("2^-149", "2^-133"): [2.0**-133 if s == 2.0**-149 else s for s in scales]
    for label, scales in EXTREME_SCALES[torch.float32].items()
}


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator on ``device``: the same inputs on every run of the check."""
    return torch.Generator(device=device).manual_seed(seed)


def make_matrix(num_tasks: int, size: int, dtype: torch.dtype, device: torch.device, layout: str,
                seed: int = 0) -> Tensor:
    """J (T, P) with correlated rows, laid out as ``layout``: "contiguous", "strided" (column
    stride 2) or "column-major" (strides (1, T)); drawn, rounded to ``dtype``, then viewed."""
    gen = generator(device, seed)
    width = 2 * size if layout == "strided" else size
    shared = torch.randn(1, width, generator=gen, device=device)
    rows = (0.6 * shared + torch.randn(num_tasks, width, generator=gen, device=device) + 0.1).to(dtype)
    if layout == "contiguous":
        return rows
    if layout == "strided":
        return rows[:, ::2]
    if layout == "column-major":
        return rows.T.contiguous().T
    raise ValueError(f"unknown layout {layout!r}")


def scaled_rows(scales: Sequence[float], size: int, dtype: torch.dtype, device: torch.device, seed: int = 0,
                pairs: bool = False) -> Tensor:
    """Row t uniform in [-1, 1)·scales[t], rounded to ``dtype`` (subnormals included). With
    ``pairs``, odd rows are the mean of their row and the one before, so off-diagonals are large."""
    gen = generator(device, seed)
    base = torch.rand(len(scales), size, generator=gen, dtype=torch.float64, device=device) * 2 - 1
    if pairs:
        base[1::2] = 0.5 * (base[0::2][: base[1::2].shape[0]] + base[1::2])
    scale = torch.tensor(list(scales), dtype=torch.float64, device=device)[:, None]
    return (base * scale).to(dtype)


def param_specs(size: int) -> list[tuple[tuple[int, ...], str]]:
    """Parameter shapes totalling ``size`` elements, each with the layout its gradient takes:
    transposed, strided, stride-0, another dtype (cast), missing (None), contiguous."""
    if size < 6:
        kinds = ["strided", "expand", "none", "cast", "contiguous"]
        return [((1,), kinds[i]) for i in range(size)]
    side = max(1, math.isqrt(size // 4))
    specs: list[tuple[tuple[int, ...], str]] = [((side, side), "transposed")]
    rest = size - side * side
    part = max(1, rest // 5)
    for kind in ("strided", "expand", "cast", "none"):
        specs.append(((part,), kind))
        rest -= part
    specs.append(((rest,), "contiguous"))
    return [s for s in specs if math.prod(s[0]) > 0]


def make_grads(num_tasks: int, size: int, dtype: torch.dtype, device: torch.device, seed: int = 1,
               ) -> tuple[list[tuple[int, ...]], list[list[Tensor | None]]]:
    """(shapes, grads[t][k]): per-task gradients of the parameters of :func:`param_specs`."""
    gen = generator(device, seed)
    specs = param_specs(size)
    other = torch.float64 if dtype == torch.float32 else torch.float32

    def one(shape: tuple[int, ...], kind: str) -> Tensor | None:
        n = math.prod(shape)
        if kind == "none":
            return None
        if kind == "transposed":
            return torch.randn(shape[::-1], generator=gen, device=device).to(dtype).T
        if kind == "strided":
            return torch.randn(2 * n, generator=gen, device=device).to(dtype)[::2].view(shape)
        if kind == "expand":
            return torch.randn(1, generator=gen, device=device).to(dtype).expand(n).view(shape)
        if kind == "cast":
            return torch.randn(shape, generator=gen, device=device).to(other)
        return torch.randn(shape, generator=gen, device=device).to(dtype)

    return [s for s, _ in specs], [[one(s, k) for s, k in specs] for _ in range(num_tasks)]


def row_views(row: Tensor, shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
    """One row of J cut into views shaped like the parameters, in order."""
    views, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        views.append(row[offset: offset + n].view(shape))
        offset += n
    return views
