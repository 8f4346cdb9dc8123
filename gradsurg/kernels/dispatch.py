"""Choosing the kernel backend for a device, and reporting the choice."""

from __future__ import annotations

from types import ModuleType

import torch

from . import reference

__all__ = ["BACKENDS", "get_backend"]

#: Backend names accepted by ``GradSurgery(backend=...)``.
BACKENDS = ("auto", "torch")


def get_backend(name: str, device: torch.device) -> ModuleType:
    """Return the kernel module for ``name`` on ``device``.

    ``"auto"`` picks the fastest backend available for the device; today that is the pure-torch
    reference everywhere. The module exposes ``NAME``, ``flatten_into``, ``gram``, ``gram_lists``
    and ``combine_into`` with the semantics of :mod:`gradsurg.kernels.reference`.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
    """
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return reference
