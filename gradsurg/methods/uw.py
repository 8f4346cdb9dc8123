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
from torch import Tensor, nn

from .base import LossWeighting

__all__ = ["UW"]


class UW(LossWeighting):
    """Uncertainty weighting with learnable log-variances ``s`` (an ``nn.Parameter`` of shape
    ``(num_tasks,)``, trained by the wrapped optimizer: :class:`~gradsurg.GradSurgery` adds it
    as a parameter group at construction, which is why ``num_tasks`` is required up front).

    Args:
        num_tasks: number of tasks T (required).
        init: initial value of every s_t (default 0).
    """

    name = "uw"
    needs = frozenset({"num_tasks"})
    permutation_invariant = True
    tied_to_num_tasks = True

    def __init__(self, num_tasks: int | None = None, init: float = 0.0) -> None:
        super().__init__()
        if num_tasks is None:
            raise ValueError("num_tasks: uw needs the number of tasks (its log-variances are parameters "
                             "the optimizer must know at construction), e.g. UW(num_tasks=3)")
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks: must be an int >= 1, got {num_tasks!r}")
        if isinstance(init, bool) or not isinstance(init, (int, float)) or not abs(init) < float("inf"):
            raise ValueError(f"init: must be a finite number, got {init!r}")
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init)))
        self._num_tasks = num_tasks

    def check_num_tasks(self, num_tasks: int) -> None:
        if num_tasks != self.log_vars.numel():
            raise ValueError(f"losses: uw was built for {self.log_vars.numel()} tasks; got {num_tasks}")

    def objective(self, losses: Tensor) -> Tensor:
        losses = losses.reshape(-1)
        self.check_num_tasks(losses.numel())
        s = self.log_vars.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = (0.5 * torch.exp(-self.log_vars.detach())).to(device="cpu", dtype=torch.float64)
        return (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()

    def reset(self) -> None:
        """Nothing to forget: the log-variances are parameters (re-initialise them yourself)."""

    def set_extra_state(self, state) -> None:
        super().set_extra_state(state)
        self._num_tasks = self.log_vars.numel()

    def extra_repr(self) -> str:
        return f"num_tasks={self.log_vars.numel()}"
