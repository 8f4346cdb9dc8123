"""A seeded ``torch.Generator`` as checkpointed method state (PCGrad, GradVac, GradDrop, RLW)."""

from __future__ import annotations

import numbers
from typing import Any

import torch

__all__ = ["Seeded"]


class Seeded:
    """Mixin for methods that draw random numbers: their own generator, seeded with ``seed``,
    re-seeded by ``reset()``, and saved in ``state_dict()`` so that a resumed run draws exactly
    what an uninterrupted one would. Put it before the Method base class."""

    stateful = True
    seed: int
    generator: torch.Generator

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def reset(self) -> None:
        """Forget the base state and re-seed the generator with ``seed``."""
        super().reset()  # type: ignore[misc]
        self.generator.manual_seed(self.seed)

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus the generator's state."""
        return {**super().get_extra_state(), "generator": self.generator.get_state()}  # type: ignore[misc]

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)  # type: ignore[misc]
        self.generator.set_state(state["generator"])
