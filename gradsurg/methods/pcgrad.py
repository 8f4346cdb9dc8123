"""``pcgrad``: Projecting Conflicting Gradients (Yu et al. 2020, "Gradient Surgery for
Multi-Task Learning", NeurIPS, arXiv:2001.06782, Algorithm 1).

For every task i, g_i^PC starts at g_i and visits the other tasks j in a random order; whenever
g_i^PC · g_j < 0 it is projected on the normal plane of the *original* g_j:

    g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j

and the update is Σ_i g_i^PC. Each g_i^PC stays a linear combination Σ_k C_ik g_k of the original
gradients, so every dot product the algorithm needs is (C G)_ij: the whole method runs on the
T×T Gram matrix, never on the P-sized vectors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import _compiled
from ._seeded import Seeded
from .base import GramMethod

__all__ = ["PCGrad", "pcgrad_weights", "random_orders"]


def random_orders(num_tasks: int, generator: torch.Generator) -> Tensor:
    """Draw one independent random permutation of ``range(num_tasks)`` per task.

    Row ``i`` is the order in which task ``i`` visits the other tasks (its own index is in the
    row and is skipped), as in Algorithm 1 of the paper where each task shuffles on its own.
    """
    keys = torch.rand((num_tasks, num_tasks), generator=generator, dtype=torch.float64)
    return torch.argsort(keys, dim=1)


def pcgrad_weights(gram: Tensor, order: Tensor) -> Tensor:
    """PCGrad weights for a given visiting order.

    Args:
        gram: float64 Gram matrix ``(T, T)`` of the task gradients.
        order: int64 ``(T, T)``; row ``i`` is a permutation of ``range(T)``, the order in which
            task ``i`` is projected against the others (entry ``i`` is skipped).

    Returns:
        ``w`` of shape ``(T,)`` with ``w @ J = Σ_i g_i^PC``.

    Runs in C++ (csrc/cpu/surgery.cpp, the same visits) when the extension is built, else
    in numpy (see :mod:`._compiled`); the two are cross-checked in the tests.

    A task whose gradient is zero is never projected on (the projection is undefined and its
    inner product with anything is 0, so PCGrad would not project anyway).
    """
    compiled = _compiled.solver("pcgrad_weights")
    if compiled is not None:  # csrc/cpu/surgery.cpp: the same visits in C++
        return compiled(gram.detach(), order.detach())
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    order_np = order.detach().cpu().numpy()
    num_tasks = g.shape[0]
    coef = np.eye(num_tasks)
    rows = np.arange(num_tasks)
    diag = np.diagonal(g)
    # Everything that does not depend on C, for all rounds at once: rows G_j of the visited
    # tasks, their squared norms (1 where zero), and whether the visit may project at all.
    visited = g[order_np]  # (i, r, k) = G[order[i, r], k]
    norm_sq = np.where(diag > 0, diag, 1.0)[order_np]
    may = (order_np != rows[:, None]) & (diag[order_np] > 0)
    # Round r handles, for every task i at once, the r-th task in i's order: the rows of C are
    # independent, so the T sequential visits of each task become T vectorised rounds. numpy,
    # not torch: 2T small operations, where torch's per-call overhead dominated (T = 16: 1.6 ms).
    for r in range(num_tasks):
        dot = (coef * visited[:, r]).sum(axis=1)  # g_i^PC · g_j = Σ_k C_ik G_kj
        coef[rows, order_np[:, r]] -= np.where(may[:, r] & (dot < 0), dot / norm_sq[:, r], 0.0)
    return torch.from_numpy(coef.sum(axis=0))


class PCGrad(Seeded, GramMethod):
    """PCGrad (Yu et al. 2020). The combined update is the *sum* of the projected gradients,
    as in the paper; wrap with ``reduction="mean"`` in :class:`~gradsurg.GradSurgery` for the mean.

    Args:
        seed: seed of the method's own ``torch.Generator``, which draws the per-task random
            orders; its state is part of ``state_dict()``, so a resumed run draws the same orders
            as an uninterrupted one.

    Permutation behaviour: relabelling the tasks and permuting the orders accordingly gives the
    same combined update; with the generator's orders, a relabelled problem sees other orders.
    """

    name = "pcgrad"
    # Not permutation invariant: the visiting order is drawn per task position.
    positively_homogeneous = linear_under_scaling = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed=seed)

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return pcgrad_weights(gram, random_orders(gram.shape[0], self.generator))

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
