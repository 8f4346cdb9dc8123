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

import torch
from torch import Tensor

from ._task_parameters import TaskParameterWeighting

__all__ = ["IMTLL"]


class IMTLL(TaskParameterWeighting):
    """IMTL-L: ``Σ_t (e^{s_t} L_t − s_t)`` with learnable log-scales ``s`` (an ``nn.Parameter`` of
    shape ``(num_tasks,)``, added to the wrapped optimizer by :class:`~gradsurg.GradSurgery` at
    construction, which is why ``num_tasks`` is required up front).

    Args:
        num_tasks: number of tasks T (required).
        init: initial value of every s_t (default 0: the objective starts as the plain sum).
    """

    name = "imtl_l"
    parameter_name = "log_scales"
    parameter_what = "log-scales"

    def objective(self, losses: Tensor) -> Tensor:
        """``Σ_t (e^{s_t} L_t − s_t)`` (graph through the losses and the log-scales)."""
        losses = losses.reshape(-1)
        self.check_num_tasks(losses.numel())
        s = self.task_parameter.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = torch.exp(self.task_parameter.detach()).to(device="cpu", dtype=torch.float64)
        return (torch.exp(s) * losses - s).sum()
