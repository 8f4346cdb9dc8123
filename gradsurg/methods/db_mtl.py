"""``db_mtl``: Dual-Balancing Multi-Task Learning (Lin et al. 2023, "Dual-Balancing for
Multi-Task Learning", arXiv:2308.12029).

DB-MTL balances the tasks twice:

1. *Loss scale*: it descends Σ_t log L_t instead of Σ_t L_t, so task t contributes
   ∇ log L_t = ∇L_t / L_t, whatever the unit of L_t.
2. *Gradient magnitude*: every task's (log-loss) gradient is rescaled to the largest magnitude,

       d = Σ_t (max_s m_s / m_t) ĝ_t,

   with m_t = ‖ĝ_t‖ and ĝ_t an exponential moving average (rate β) of ∇ log L_t.

Gram form (documented deviation). The EMA of the gradient *vectors* is not a function of the
current Gram matrix, so gradsurg tracks the EMA of their *norms* instead,

    n_t = √G_tt / L_t,   m_t ← β m_t + (1 − β) n_t   (m = 0 before the first step),

and uses the current gradients: d = Σ_t w_t g_t with w_t = (1/L_t)·(max_s m_s)/m_t. With β = 0
this is exactly the paper's update without momentum. The paper's optional decaying rate
β/k^σ is not implemented (σ = 0, the paper's default).

Guards: the log needs L_t > 0; a non-positive or non-finite loss raises ``ValueError("losses:
...")`` rather than adding the ε = 1e−8 of the reference code inside the log, which silently
turns a zero loss into a weight of 1e8. A task with m_t = 0 (zero gradient so far) gets weight 0,
and all-zero gradients give all-zero weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import GramMethod

__all__ = ["DBMTL", "db_mtl_weights"]


def db_mtl_weights(gram: Tensor, losses: Tensor, ema: Tensor | None, beta: float) -> tuple[Tensor, Tensor]:
    """Return ``(w, new_ema)`` for one step; ``ema`` (``(T,)`` or None for zeros) is not modified."""
    if not bool(torch.isfinite(losses).all()) or not bool((losses > 0).all()):
        raise ValueError(f"losses: DB-MTL takes log L_t and needs finite positive losses, got {losses.tolist()}")
    norms = gram.diagonal().clamp(min=0.0).sqrt() / losses
    prev = torch.zeros_like(norms) if ema is None else ema
    new = beta * prev + (1.0 - beta) * norms
    top = new.max()
    live = new > 0
    ratio = torch.where(live, top / torch.where(live, new, 1.0), 0.0)
    return ratio / losses, new


class DBMTL(GramMethod):
    """DB-MTL (Lin et al. 2023) on G and the losses.

    Args:
        beta: EMA rate β ∈ [0, 1) of the log-loss gradient norms (the paper's default 0.9).

    State (in ``state_dict()``): the ``(T,)`` EMA of the norms. Relabelling the tasks permutes
    the weights; a common scale of the gradients leaves the weights unchanged (the update scales
    with it); scaling one loss L_t by c (its gradient too) leaves the update unchanged.
    """

    name = "db_mtl"
    permutation_invariant = positively_homogeneous = True
    needs_losses = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(self, beta: float = 0.9) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
            raise ValueError(f"beta: must be in [0, 1), got {beta!r}")
        self.beta = float(beta)
        self.ema: Tensor | None = None

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        assert losses is not None
        w, self.ema = db_mtl_weights(gram, losses, self.ema, self.beta)
        return w

    def reset(self) -> None:
        """Forget the EMA."""
        super().reset()
        self.ema = None

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "ema": self.ema}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.ema = None if state["ema"] is None else state["ema"].clone()

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
