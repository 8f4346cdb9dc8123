"""How precise a Gram matrix is, read off the matrix itself.

The Gram methods receive G in float64, but not every float64 G is float64-accurate: for float32
task gradients the compiled backends (csrc/cpu/gram.cpp and the GPU kernels) form the dot
products in float32 per column block and only add the blocks in float64, so every entry carries
a rounding error of up to ~eps32·‖g_i‖‖g_j‖. On a rank-deficient J (T > P, dependent gradients)
the exact null eigenvalues of G then come out as ±1e-8·λ_max, far above the float64 rounding
level (~1e-16·λ_max) that the rank decisions were written for, and a solver that keeps them
divides by noise (ConFIG's pseudo-inverse) or builds weights along them (the dual-cone
projections). A G computed in float64 (the torch backend, float64 gradients) and one whose
genuinely small eigenvalues matter look the same, so the precision cannot come from the spectrum:
it comes from the entries. When every entry of G is a float32 number, G was rounded to float32
or summed in float32 (one column block: up to a few thousand parameters), and its eigenvalues
below ~T·eps32·λ_max say nothing (measured on rank-deficient float32 J through the C++ Gram:
noise ≤ 0.3·T·eps32·λ_max for T = 2 … 64, P = 3 … 3·10⁵). An exact G of generic float64 data is
a float32 number only by coincidence; one of short (e.g. small dyadic) data can be, and then
loses only eigenvalues below T·eps32·λ_max.

A G summed over many float32 blocks has more bits than float32 and is not detected: there the
caller would have to state the precision (it knows the gradients' dtype).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["EPS32", "rank_rtol"]

EPS32 = float(torch.finfo(torch.float32).eps)


def _float32_entries(gram: Tensor | np.ndarray) -> bool:
    """Whether every entry of ``gram`` is exactly a float32 number."""
    g = torch.as_tensor(gram)
    return bool((g.to(torch.float32).to(g.dtype) == g).all())


def rank_rtol(gram: Tensor | np.ndarray, floor: float) -> float:
    """Relative threshold (times the largest eigenvalue of the Jacobi-scaled ``gram``) at or below
    which its eigenvalues are rounding noise: ``floor`` (the caller's float64 threshold) for a
    float64-accurate G, at least ``T·eps32`` for one whose entries are float32 numbers (see the
    module docstring). A function of G's entries only, so the same for every labelling of the
    tasks."""
    num_tasks = gram.shape[0]
    if _float32_entries(gram):
        return max(floor, num_tasks * EPS32)
    return floor
