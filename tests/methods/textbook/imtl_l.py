"""Oracle of ``imtl_l``: the IMTL-L objective per loss (Liu et al. 2021, "Towards Impartial
Multi-task Learning", ICLR, Sec. 3.2): each raw loss L_t becomes e^{s_t} L_t − s_t."""

from __future__ import annotations

import math


def imtl_l(losses: list[float], log_scales: list[float]) -> tuple[float, list[float], list[float]]:
    """``(objective, ∂objective/∂L_t, ∂objective/∂s_t)`` for the losses and log-scales.

    objective = Σ_t (e^{s_t} L_t − s_t); ∂/∂L_t = e^{s_t}; ∂/∂s_t = e^{s_t} L_t − 1 (zero when the
    scaled loss is 1, the paper's balance condition).
    """
    value = 0.0
    d_losses, d_scales = [], []
    for loss, s in zip(losses, log_scales):
        scale = math.exp(s)
        value += scale * loss - s
        d_losses.append(scale)
        d_scales.append(scale * loss - 1.0)
    return value, d_losses, d_scales
