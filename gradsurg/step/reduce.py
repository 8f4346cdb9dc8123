"""Reduce: make every process see the same J. In one process there is nothing to do.

The seam for multi-process training: a data-parallel reducer all-reduces the rows of J (and
the task-specific gradients) here, so that the Gram, the weights and the write that follow are
those of the global batch.
"""

from __future__ import annotations

from ..buffer import GradBuffer
from .capture import Captured

__all__ = ["LocalReduce"]


class LocalReduce:
    """The single-process reducer: J and the task-specific gradients are already global."""

    def __call__(self, buffer: GradBuffer | None, captured: Captured) -> None:
        """Nothing to exchange in one process."""
