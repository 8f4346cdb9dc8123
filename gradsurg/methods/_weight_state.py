"""Gram methods whose state is one weight vector λ carried from step to step (``modo``'s λ,
``cr_mogm``'s averaged weights): the state, its reset and its checkpoint, in one place."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import GramMethod

__all__ = ["WeightStateMethod"]


class WeightStateMethod(GramMethod):
    """A stateful :class:`GramMethod` with ``lam``: the ``(T,)`` float64 weights of the last
    step, None until the first call and after :meth:`reset`; saved by ``state_dict()``."""

    stateful = True
    tied_to_num_tasks = True

    def __init__(self) -> None:
        super().__init__()
        self.lam: Tensor | None = None

    def reset(self) -> None:
        """Forget λ: the next call starts over."""
        super().reset()
        self.lam = None

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus λ."""
        return {**super().get_extra_state(), "lam": None if self.lam is None else self.lam.clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        self.lam = None if state.get("lam") is None else state["lam"].clone()
