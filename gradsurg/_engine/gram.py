"""Gram: G = J·Jᵀ in float64 (summed over layout groups), and the step's one host
synchronisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._buffer import SharedBuffers

if TYPE_CHECKING:
    from ..kernels.protocol import Backend

__all__ = ["HostView", "gram_parts", "to_host"]


def gram_parts(buffers: SharedBuffers | None, kernels: Sequence[Backend]) -> list[Tensor]:
    """Each layout group's float64 Gram matrix, on its device (none without shared parameters)."""
    if buffers is None:
        return []
    return [backend.gram(group.matrix) for group, backend in zip(buffers.groups, kernels)]


@dataclass(frozen=True)
class HostView:
    """What the host needs to decide and to weigh, all float64/bool CPU tensors.

    Attributes:
        losses: ``(T,)`` loss values (unscaled when a GradScaler scaled them).
        gram: ``(T, T)`` Gram matrix (of the unscaled gradients), or None without one.
        finite: ``(T,)`` whether each task's loss and gradients are finite.
        inv_scale: the GradScaler's 1/scale the losses and Gram were unscaled by, or None.
    """

    losses: Tensor
    gram: Tensor | None
    finite: Tensor
    inv_scale: float | None = None


def to_host(
    losses: Tensor,
    parts: Sequence[Tensor],
    finite_grads: Tensor | None,
    inv_scale: float | None = None,
) -> HostView:
    """Bring the losses, the Gram matrix (summed over groups) and the finiteness flags to the
    CPU together.

    This is the step's one host synchronisation: the tiny T×T method runs on the host, and the
    non-finite decision needs the flags there. A task is finite when its loss, its Gram
    diagonal (its shared gradient) and its task-specific gradients are. ``inv_scale`` (a
    GradScaler's 1/scale) unscales the losses and the Gram, so methods see the true values.
    """
    losses = losses.detach().to(device="cpu", dtype=torch.float64)
    gram = None
    for part in parts:
        part = part.to(device="cpu", dtype=torch.float64)
        gram = part if gram is None else gram + part
    if inv_scale is not None:
        losses = losses * inv_scale
        if gram is not None:
            gram = gram * (inv_scale * inv_scale)
    finite = torch.isfinite(losses)
    if gram is not None:
        finite &= torch.isfinite(gram.diagonal())
    if finite_grads is not None:
        finite &= finite_grads.cpu()
    return HostView(losses, gram, finite, inv_scale)
