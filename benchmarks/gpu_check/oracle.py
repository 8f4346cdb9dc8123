"""A backend's result against the float64 oracle, as the largest error in units of the tolerance
(≤ 1 passes): the Gram by √(G_ii·G_jj), combine by its rounding bound (gradsurg._tolerances)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradsurg._tolerances import COMBINE_C
from gradsurg.kernels import reference

__all__ = ["combine_error", "combine_tolerance", "gram_error"]


def gram_error(got: Tensor, exact: Tensor) -> float:
    """Worst |G − G_exact| / √(G_ii·G_jj) over the entries (exact zeros where that scale is 0);
    inf when the dtype is not float64, the shape differs, or the NaN / non-finite pattern does."""
    if got.dtype != torch.float64 or got.shape != exact.shape:
        return math.inf
    got = got.to(exact.device)
    if not torch.equal(torch.isnan(got), torch.isnan(exact)):
        return math.inf
    finite = torch.isfinite(exact)
    if not torch.equal(torch.isfinite(got), finite):
        return math.inf
    if got.numel() == 0:
        return 0.0
    diag = exact.diagonal().abs()
    scale = torch.sqrt(diag[:, None] * diag[None, :])
    err = torch.where(finite, (got - exact).abs(), torch.zeros_like(got))
    inf = torch.full_like(err, math.inf)
    ratio = torch.where(scale > 0, err / torch.where(scale > 0, scale, 1.0), torch.where(err > 0, inf, 0.0))
    return float(ratio.max().item())


def combine_tolerance(dtype: torch.dtype, num_tasks: int) -> float:
    """c in |got − exact| ≤ c·(Σ|w||J| + |β||out|): the dtype's rounding of weights and result, plus
    a float32 sum over ``num_tasks`` rows."""
    return COMBINE_C[dtype] + (num_tasks + 2) * 2.0**-24


def combine_error(got: Tensor, start: Tensor | None, matrix: Tensor, weights: Tensor, beta: float) -> float:
    """Worst |got − exact| / (c·(Σ_t |w_t||J_tk| + |β||start_k|)) against the float64 oracle."""
    j = matrix.to(torch.float64)
    w = weights.to(device=j.device, dtype=torch.float64)
    exact = torch.zeros(j.shape[1], dtype=torch.float64, device=j.device)
    if start is not None:
        exact.copy_(start)
    reference.combine_into(exact, j, w, beta=beta)
    bound = w.abs() @ j.abs()
    if beta != 0.0 and start is not None:
        bound = bound + abs(beta) * start.to(torch.float64).abs()
    tol = combine_tolerance(matrix.dtype, matrix.shape[0]) * bound
    got64 = got.to(device=j.device, dtype=torch.float64)
    if got64.shape != exact.shape or not bool(torch.isfinite(got64).all()):
        return math.inf
    if got64.numel() == 0:
        return 0.0
    err = (got64 - exact).abs()
    inf = torch.full_like(err, math.inf)
    ratio = torch.where(tol > 0, err / torch.where(tol > 0, tol, 1.0), torch.where(err > 0, inf, 0.0))
    return float(ratio.max().item())
