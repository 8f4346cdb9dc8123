"""``gradvac``: Gradient Vaccine (Wang et al. 2021, "Gradient Vaccine: Investigating and
Improving Multi-task Optimization in Massively Multilingual Models", ICLR, arXiv:2010.05874).

GradVac generalises PCGrad: instead of acting only when two gradients conflict (cosine < 0), it
pulls the cosine of every pair up to an adaptive target φ̂_ij, an exponential moving average of
the cosines seen so far. For task i, visiting j in a random order, with φ = cos(g_i^PC, g_j):

    if φ < φ̂_ij:  g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂_ij √(1−φ²) − φ √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j
    φ̂_ij ← (1 − β) φ̂_ij + β φ

(the paper's Eq. for the vaccine and its EMA update, with φ measured before the correction).
The update is Σ_i g_i^PC. As with PCGrad, g_i^PC = Σ_k C_ik g_k, so norms and cosines all come
from the Gram matrix: ‖g_i^PC‖² = C_i G C_iᵀ and g_i^PC · g_j = (C G)_ij.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _compiled
from ._seeded import Seeded
from .base import GramMethod
from .pcgrad import random_orders

__all__ = ["GradVac", "gradvac_weights"]


def gradvac_weights(gram: Tensor, order: Tensor, rho: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """GradVac weights for a given visiting order and EMA targets.

    Args:
        gram: float64 Gram matrix ``(T, T)``.
        order: int64 ``(T, T)``; row ``i`` is the order in which task ``i`` visits the others.
        rho: float64 ``(T, T)`` EMA targets φ̂ (diagonal unused).
        beta: EMA rate β in ``[0, 1]``.

    Returns:
        ``(w, new_rho)`` with ``w @ J = Σ_i g_i^PC``; ``rho`` is not modified.

    Runs in C++ (csrc/cpu/surgery.cpp, the same visits) when the extension is built, else
    in numpy (see :mod:`._compiled`); the two are cross-checked in the tests.

    Cosines with a zero gradient count as 0 and never trigger a correction against it. So does a
    g_i^PC cancelled to rounding level (e.g. corrected against g_j = −g_i): its squared norm
    ‖C_i‖_G² is then below 1e3·T·eps·(Σ_k |C_ik| ‖g_k‖)², its direction is rounding noise, and a
    cosine measured on it would feed that noise into the targets φ̂ (differently at every scale of
    the gradients). A target φ̂ = 1 (exact alignment, which no multiple of g_j can reach)
    triggers no correction either.
    """
    compiled = _compiled.solver("gradvac_weights")
    if compiled is not None:  # csrc/cpu/surgery.cpp: the same visits in C++
        w, new_rho = compiled(gram.detach(), order.detach(), rho.detach(), float(beta))
        return w, new_rho
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    order_np = order.detach().cpu().numpy()
    rho_np = rho.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    num_tasks = g.shape[0]
    coef = np.eye(num_tasks)
    rows = np.arange(num_tasks)
    norms = np.sqrt(np.maximum(np.diagonal(g), 0.0))
    noise = 1e3 * num_tasks * float(np.finfo(np.float64).eps)
    # Rows of C and entries of φ̂ are independent across i: as in PCGrad, round r handles the
    # r-th visit of every task at once (in numpy: tiny arrays, where torch's per-call overhead
    # dominated).
    for r in range(num_tasks):
        j = order_np[:, r]
        coef_gram = coef @ g
        dot = np.einsum("ik,ik->i", coef, g[j])
        norm2_i = np.einsum("ik,ik->i", coef_gram, coef)
        reach = np.abs(coef) @ norms  # ≥ ‖g_i^PC‖; rounding of norm2_i is ~eps·reach²
        norm_i = np.sqrt(np.where(norm2_i > noise * reach * reach, norm2_i, 0.0))
        norm_j = norms[j]
        norm_prod = norm_i * norm_j
        phi = np.where(norm_prod > 0, dot / np.where(norm_prod > 0, norm_prod, 1.0), 0.0)
        phi = np.clip(phi, -1.0, 1.0)
        target = rho_np[rows, j]
        sin_target = np.sqrt(np.maximum(1.0 - target * target, 0.0))
        active = j != rows
        correct = active & (phi < target) & (norm_j > 0) & (sin_target > 0)
        sin_phi = np.sqrt(np.maximum(1.0 - phi * phi, 0.0))
        denom = np.where(correct, norm_j * sin_target, 1.0)
        step = norm_i * (target * sin_phi - phi * sin_target) / denom
        coef[rows, j] += np.where(correct, step, 0.0)
        rho_np[rows, j] = np.where(active, (1.0 - beta) * target + beta * phi, target)
    return torch.from_numpy(coef.sum(axis=0)), torch.from_numpy(rho_np)


class GradVac(Seeded, GramMethod):
    """Gradient Vaccine (Wang et al. 2021).

    Args:
        beta: EMA rate β of the cosine targets (the paper uses 1e-2).
        seed: seed of the generator drawing the per-task visiting orders.

    State (in ``state_dict()``): the T×T targets φ̂ (zeros at the first step) and the generator.
    The number of tasks may not change without :meth:`reset`.
    """

    name = "gradvac"
    # Not permutation invariant: the visiting order is drawn per task position.
    positively_homogeneous = linear_under_scaling = True
    tied_to_num_tasks = True

    def __init__(self, beta: float = 0.01, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta: must be in [0, 1], got {beta!r}")
        self.beta = float(beta)
        self.rho: Tensor | None = None

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        num_tasks = gram.shape[0]
        rho = self.rho if self.rho is not None else torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
        w, self.rho = gradvac_weights(gram, random_orders(num_tasks, self.generator), rho, self.beta)
        return w

    def reset(self) -> None:
        """Clear the targets and re-seed the generator."""
        super().reset()
        self.rho = None

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus the targets and the generator's state."""
        return {**super().get_extra_state(), "rho": self.rho}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        self.rho = None if state["rho"] is None else state["rho"].clone()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, seed={self.seed}"
