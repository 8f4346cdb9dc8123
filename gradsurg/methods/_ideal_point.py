"""Scalarisations measured from an ideal point that may be the running minimum of the losses
(``stch``, ``pbi``): that state, its reset and its checkpoint, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .base import LossWeighting

__all__ = ["RunningIdealWeighting"]


class RunningIdealWeighting(LossWeighting):
    """A :class:`LossWeighting` with ``running_min``: the element-wise minimum of the losses seen
    so far (used with ``ideal="running_min"``; None otherwise, and after :meth:`reset`), saved by
    ``state_dict()``."""

    def __init__(self) -> None:
        super().__init__()
        self.ideal: str | Tensor | None = None
        self.running_min: Tensor | None = None

    def set_ideal(self, ideal: str | Sequence[float] | None) -> None:
        """Check and set the ideal point: None (0), T finite numbers, or ``"running_min"``.

        Only the running minimum is state (of size T); a fixed ideal point keeps none, so the
        method is stateful exactly with ``"running_min"``.

        Raises:
            ValueError: naming ``ideal``.
        """
        if isinstance(ideal, str):
            if ideal != "running_min":
                raise ValueError(f"ideal: expected None, a sequence of numbers or 'running_min', got {ideal!r}")
            self.ideal = ideal
        elif ideal is None:
            self.ideal = None
        else:
            try:
                vec = torch.as_tensor(list(ideal), dtype=torch.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"ideal: expected None, a sequence of numbers or 'running_min', got {ideal!r}") from None
            if not bool(torch.isfinite(vec).all()):
                raise ValueError(f"ideal: must be finite, got {ideal!r}")
            self.ideal = vec
        self.running_min = None
        self.stateful = self.tied_to_num_tasks = isinstance(self.ideal, str)  # type: ignore[misc]

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
