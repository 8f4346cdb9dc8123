"""Scalarisations measured from an ideal point that may be the running minimum of the losses
(``stch``, ``pbi``): that state, its reset and its checkpoint, in one place."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import LossWeighting

__all__ = ["RunningIdealWeighting"]


class RunningIdealWeighting(LossWeighting):
    """A :class:`LossWeighting` with ``running_min``: the element-wise minimum of the losses seen
    so far (used with ``ideal="running_min"``; None otherwise, and after :meth:`reset`), saved by
    ``state_dict()``."""

    def __init__(self) -> None:
        super().__init__()
        self.running_min: Tensor | None = None

    def reset(self) -> None:
        """Forget the running minimum."""
        super().reset()
        self.running_min = None

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus the running minimum (None unless ``ideal="running_min"``)."""
        return {**super().get_extra_state(), "running_min": self.running_min}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        rm = state.get("running_min")
        self.running_min = None if rm is None else rm.clone()
