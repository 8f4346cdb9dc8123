"""Loss weightings with one learnable parameter per task (``uw``'s log-variances, ``imtl_l``'s
log-scales): the parameter, its checks and its bookkeeping, in one place."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .base import LossWeighting

__all__ = ["TaskParameterWeighting"]


class TaskParameterWeighting(LossWeighting):
    """A :class:`LossWeighting` whose state is an ``nn.Parameter`` of shape ``(num_tasks,)``,
    trained by the wrapped optimizer (:class:`~gradsurg.GradSurgery` adds it as a parameter
    group at construction, which is why ``num_tasks`` is needed up front).

    Subclasses name the attribute (``parameter_name``, kept as the ``state_dict`` key) and say
    what it is (``parameter_what``, for messages).

    Args:
        num_tasks: number of tasks T (required).
        init: initial value of every entry (finite).
    """

    needs = frozenset({"num_tasks"})
    permutation_invariant = True
    tied_to_num_tasks = True
    parameter_name: ClassVar[str] = ""
    parameter_what: ClassVar[str] = ""

    def __init__(self, num_tasks: int | None = None, init: float = 0.0) -> None:
        super().__init__()
        if num_tasks is None:
            raise ValueError(
                f"num_tasks: {self.name} needs the number of tasks (its {self.parameter_what} are parameters "
                f"the optimizer must know at construction), e.g. {type(self).__name__}(num_tasks=3)"
            )
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks: must be an int >= 1, got {num_tasks!r}")
        if isinstance(init, bool) or not isinstance(init, (int, float)) or not abs(init) < float("inf"):
            raise ValueError(f"init: must be a finite number, got {init!r}")
        setattr(self, self.parameter_name, nn.Parameter(torch.full((num_tasks,), float(init))))
        self._num_tasks = num_tasks

    @property
    def task_parameter(self) -> Tensor:
        """The ``(T,)`` parameter."""
        return getattr(self, self.parameter_name)

    def check_num_tasks(self, num_tasks: int) -> None:
        """Refuse losses whose count differs from the parameter's size."""
        size = self.task_parameter.numel()
        if num_tasks != size:
            raise ValueError(f"losses: {self.name} was built for {size} tasks; got {num_tasks}")

    def reset(self) -> None:
        """Nothing to forget: the per-task values are parameters (re-initialise them yourself)."""

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the base state; the task count is the parameter's size."""
        super().set_extra_state(state)
        self._num_tasks = self.task_parameter.numel()

    def extra_repr(self) -> str:
        return f"num_tasks={self.task_parameter.numel()}"
