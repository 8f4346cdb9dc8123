"""``uw``: Uncertainty Weighting (Kendall et al. 2018, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics", CVPR, arXiv:1705.07115).

Each task has a learnable log-variance s_t = log σ_t². The paper's regression form
(its Eq. (7), 1/(2σ²) L + log σ) written in s, which is also LibMTL's implementation, is

    objective = Σ_t ( ½ e^{−s_t} L_t + ½ s_t ),

used for every task (the paper's classification form 1/σ² L + log σ differs by a factor 2 on
the loss term; the single form is the common practice). s starts at 0 (σ = 1). The effective
loss weights are ∂objective/∂L_t = ½ e^{−s_t}; the optimizer minimises over s too, which
drives e^{−s_t} towards 1/L_t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._task_parameters import TaskParameterWeighting

__all__ = ["UW"]


class UW(TaskParameterWeighting):
    """Uncertainty weighting with learnable log-variances ``s`` (an ``nn.Parameter`` of shape
    ``(num_tasks,)``, trained by the wrapped optimizer: :class:`~gradsurg.GradSurgery` adds it
    as a parameter group at construction, which is why ``num_tasks`` is required up front).

    Args:
        num_tasks: number of tasks T (required).
        init: initial value of every s_t (default 0).
    """

    name = "uw"
    parameter_name = "log_vars"
    parameter_what = "log-variances"

    def objective(self, losses: Tensor) -> Tensor:
        losses = losses.reshape(-1)
        self.check_num_tasks(losses.numel())
        s = self.task_parameter.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = (0.5 * torch.exp(-self.task_parameter.detach())).to(device="cpu", dtype=torch.float64)
        return (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()
