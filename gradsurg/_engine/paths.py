"""The path of each method kind through the stages of a step.

A path is chosen once per engine (:func:`path_for`) from the method's kind, so the step never
switches on a string. Adding a kind adds a method base class in :mod:`gradsurg.methods.base`,
a path class, and one entry in ``_PATHS``.
"""

from __future__ import annotations

from typing import Protocol

from .._stats import SurgeryStats
from ..methods.base import DoubleBackwardMethod, GramMethod, LossWeighting, MatrixMethod, Method
from .context import StepContext
from .loss_space import DoubleBackwardPath, LossPath
from .per_task import GramPath, MatrixPath
from .plan import StepPlan

__all__ = ["StepPath", "path_for"]


class StepPath(Protocol):
    """How one kind of method runs a step; returns the step's stats (None for a micro-batch
    captured with ``sync=False``).

    On any exception nothing visible has been changed (``.grad``, parameters, the caller's
    optimizer); the engine restores the method's state.
    """

    def run(self, plan: StepPlan, ctx: StepContext, *, sync: bool = True) -> SurgeryStats | None: ...


_PATHS: dict[type[Method], type] = {
    GramMethod: GramPath,
    MatrixMethod: MatrixPath,
    LossWeighting: LossPath,
    DoubleBackwardMethod: DoubleBackwardPath,
}


def path_for(method: Method) -> StepPath:
    """The path of the kind of ``method``: the first kind class in its MRO.

    Raises:
        TypeError: ``method`` derives from no known kind.
    """
    for base in type(method).__mro__:
        if base in _PATHS:
            return _PATHS[base](method)
    kinds = ", ".join(k.__name__ for k in _PATHS)
    raise TypeError(f"method: {type(method).__name__} is of no known kind; derive it from one of {kinds}")
