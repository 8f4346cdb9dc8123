"""Gram: G = J·Jᵀ in float64, and the step's one host synchronisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..buffer import GradBuffer

if TYPE_CHECKING:
    from ..kernels.protocol import Backend

__all__ = ["HostView", "gram_of", "to_host"]


def gram_of(buffer: GradBuffer | None, kernels: Backend) -> Tensor | None:
    """The float64 Gram matrix of the rows of J on J's device (None without shared parameters)."""
    return None if buffer is None else kernels.gram(buffer.matrix)


@dataclass(frozen=True)
class HostView:
    """What the host needs to decide and to weigh, all float64/bool CPU tensors.

    Attributes:
        losses: ``(T,)`` loss values.
        gram: ``(T, T)`` Gram matrix, or None without one.
        finite: ``(T,)`` whether each task's loss and gradients are finite.
    """

    losses: Tensor
    gram: Tensor | None
    finite: Tensor


def to_host(scalars: list[Tensor], gram: Tensor | None, finite_grads: Tensor | None) -> HostView:
    """Bring the losses, the Gram matrix and the finiteness flags to the CPU together.

    This is the step's one host synchronisation: the tiny T×T method runs on the host, and the
    non-finite decision needs the flags there. A task is finite when its loss, its Gram diagonal
    (its shared gradient) and its task-specific gradients are.
    """
    losses = torch.stack([loss.detach().to(torch.float64) for loss in scalars]).cpu()
    finite = torch.isfinite(losses)
    if gram is not None:
        gram = gram.cpu()
        finite &= torch.isfinite(gram.diagonal())
    if finite_grads is not None:
        finite &= finite_grads.cpu()
    return HostView(losses, gram, finite)
