"""``imtl_l``: the loss-balance part of Impartial Multi-Task Learning (Liu et al. 2021, "Towards
Impartial Multi-task Learning", ICLR, Sec. 3.2, IMTL-L).

Each task has a learnable log-scale s_t; the raw loss L_t is replaced by the scaled loss
e^{s_t} L_t, regularised by −s_t so that the scale cannot collapse to 0:

    objective = Σ_t ( e^{s_t} L_t − s_t ).

The model sees the loss weights ∂objective/∂L_t = e^{s_t}; the optimizer also minimises over s,
whose gradient e^{s_t} L_t − 1 vanishes when the scaled loss e^{s_t} L_t equals 1: the scales
drive every scaled loss towards the same value, whatever the raw scale of the task (the paper's
"impartial" loss balance, meant for positive losses). s starts at 0 (the plain sum).

IMTL-L equals twice :mod:`uw <gradsurg.methods.uw>` at s ↦ −s (½e^{−s}L + ½s there): the same
weighting up to a factor 2 and the sign of the parameter. The paper's full IMTL combines it with
the gradient balance IMTL-G (``imtl_g``); the two are separate methods here.

Differences from TorchJD 0.18 (``torchjd.scalarization.IMTLL``): TorchJD takes the shape of the
values (any shape); gradsurg takes the number of tasks T (a vector of T losses, checked at every
call). TorchJD's ``reset()`` zeroes the scales; here, as for ``uw``, the scales are parameters of
the model's optimizer, not method state, and :meth:`IMTLL.reset` leaves them alone (``init``
picks their starting value). The objective is the same formula.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import LossWeighting

__all__ = ["IMTLL"]


class IMTLL(LossWeighting):
    """IMTL-L: ``Σ_t (e^{s_t} L_t − s_t)`` with learnable log-scales ``s`` (an ``nn.Parameter`` of
    shape ``(num_tasks,)``, added to the wrapped optimizer by :class:`~gradsurg.GradSurgery` at
    construction, which is why ``num_tasks`` is required up front).

    Args:
        num_tasks: number of tasks T (required).
        init: initial value of every s_t (default 0: the objective starts as the plain sum).
    """

    name = "imtl_l"
    needs = frozenset({"num_tasks"})
    permutation_invariant = True
    tied_to_num_tasks = True

    def __init__(self, num_tasks: int | None = None, init: float = 0.0) -> None:
        super().__init__()
        if num_tasks is None:
            raise ValueError("num_tasks: imtl_l needs the number of tasks (its log-scales are parameters "
                             "the optimizer must know at construction), e.g. IMTLL(num_tasks=3)")
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks: must be an int >= 1, got {num_tasks!r}")
        if isinstance(init, bool) or not isinstance(init, (int, float)) or not abs(init) < float("inf"):
            raise ValueError(f"init: must be a finite number, got {init!r}")
        self.log_scales = nn.Parameter(torch.full((num_tasks,), float(init)))
        self._num_tasks = num_tasks

    def check_num_tasks(self, num_tasks: int) -> None:
        """Refuse losses whose count differs from the number of scales."""
        if num_tasks != self.log_scales.numel():
            raise ValueError(f"losses: imtl_l was built for {self.log_scales.numel()} tasks; got {num_tasks}")

    def objective(self, losses: Tensor) -> Tensor:
        """``Σ_t (e^{s_t} L_t − s_t)`` (graph through the losses and the log-scales)."""
        losses = losses.reshape(-1)
        self.check_num_tasks(losses.numel())
        s = self.log_scales.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = torch.exp(self.log_scales.detach()).to(device="cpu", dtype=torch.float64)
        return (torch.exp(s) * losses - s).sum()

    def reset(self) -> None:
        """Nothing to forget: the log-scales are parameters (re-initialise them yourself)."""

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the base state; the task count is the number of scales."""
        super().set_extra_state(state)
        self._num_tasks = self.log_scales.numel()

    def extra_repr(self) -> str:
        return f"num_tasks={self.log_scales.numel()}"
