"""``dwa``: Dynamic Weight Average (Liu et al. 2019, "End-to-End Multi-Task Learning with
Attention", CVPR, arXiv:1803.10704, Eq. (7)).

The weight of task t in period k is

    w_t(k) = T exp(r_t(k−1)/τ) / Σ_i exp(r_i(k−1)/τ),   r_t(k−1) = L̄_t(k−1) / L̄_t(k−2),

where L̄_t(k) is the average loss of task t over period k and τ the temperature (2 in the
paper); Σ_t w_t = T, and w_t(k) = 1 for the first two periods (k = 0, 1), where no ratio exists
yet. The weights are constants of the objective Σ_t w_t L_t.

The paper's periods are epochs. Here a period is ``period`` consecutive calls (default 1: the
ratio of the losses of the two previous steps, the per-step variant), or, with
``period=None``, whatever lies between two calls of :meth:`DWA.new_epoch` (the paper's
epoch averages for epochs of any length). The losses of the current call enter the current
period's average; they never influence the weights of the call itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import LossWeighting

__all__ = ["DWA"]


class DWA(LossWeighting):
    """Dynamic Weight Average: ``w = T softmax(r/τ)``, ``r_t`` the ratio of the task's mean
    losses in the two previous periods (``w = 1`` in the first two periods).

    Args:
        temperature: τ > 0 (the paper's T = 2).
        period: number of calls averaged into one period (≥ 1), or ``None`` to end periods only
            when :meth:`new_epoch` is called.

    State (in ``state_dict()``): the mean losses of the last two completed periods and the
    running sum and count of the current one. The number of tasks may not change without
    :meth:`reset`.
    """

    name = "dwa"
    permutation_invariant = positively_homogeneous = linear_under_scaling = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(self, temperature: float = 2.0, period: int | None = 1) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
            raise ValueError(f"temperature: must be a finite number > 0, got {temperature!r}")
        if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 1):
            raise ValueError(f"period: must be an int >= 1 or None, got {period!r}")
        self.temperature = float(temperature)
        self.period = period
        self.history: list[Tensor] = []  # mean losses of the last (at most two) periods, oldest first
        self._sum: Tensor | None = None
        self._count = 0

    def loss_weights(self, losses: Tensor) -> Tensor:
        values = losses.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        num_tasks = values.numel()
        if len(self.history) == 2:
            ratio = self.history[1] / self.history[0]
            w = num_tasks * torch.softmax(ratio / self.temperature, dim=0)
        else:
            w = torch.ones(num_tasks, dtype=torch.float64)
        self._sum = values.clone() if self._sum is None else self._sum + values
        self._count += 1
        if self.period is not None and self._count >= self.period:
            self.new_epoch()
        return w

    def new_epoch(self) -> None:
        """End the current period: its mean losses become L̄(k−1) of the next weights. Does
        nothing if no call happened since the last period ended."""
        if self._sum is None or self._count == 0:
            return
        self.history = [*self.history, self._sum / self._count][-2:]
        self._sum, self._count = None, 0

    def reset(self) -> None:
        """Forget the loss history."""
        super().reset()
        self.history, self._sum, self._count = [], None, 0

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus the history and the current period's sum and count."""
        return {
            **super().get_extra_state(),
            "history": [h.clone() for h in self.history],
            "sum": None if self._sum is None else self._sum.clone(),
            "count": self._count,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        self.history = [h.clone() for h in state["history"]]
        self._sum = None if state["sum"] is None else state["sum"].clone()
        self._count = int(state["count"])

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, period={self.period}"
