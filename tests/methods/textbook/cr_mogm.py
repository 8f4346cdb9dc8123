"""Oracle of ``cr_mogm``: the exponential average of a base method's composite weights (Zhou et
al. 2022, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and Beyond",
NeurIPS), applied to explicit task-gradient vectors."""

from __future__ import annotations

from collections.abc import Callable

import torch


def cr_mogm(Js, base: Callable[[torch.Tensor], torch.Tensor], alpha: float) -> list[torch.Tensor]:
    """The updates d_k = Σ_t λ_{k,t} g_t for the matrices ``Js``, where λ_k = α λ_{k−1} + (1−α) λ̂_k,
    λ̂_k = base(J_k) and λ₀ = λ̂₁ (the first update is the base method's)."""
    out = []
    lam = None
    for J in Js:
        fresh = [float(v) for v in base(J)]
        lam = fresh if lam is None else [alpha * a + (1.0 - alpha) * b for a, b in zip(lam, fresh)]
        d = [0.0] * J.shape[1]
        for t, row in enumerate(J):
            for p in range(J.shape[1]):
                d[p] += lam[t] * float(row[p])
        out.append(torch.tensor(d, dtype=torch.float64))
    return out
