"""Kernels for the heavy passes over J: flatten, Gram, combine, one backend per module.

Public API::

    from gradsurg.kernels import BACKENDS, Backend, available_backends, get_backend

:data:`BACKENDS` lists the accepted names (``"auto"`` first), :class:`Backend` is the protocol
every backend satisfies (semantics: :mod:`gradsurg.kernels.reference`), :func:`get_backend`
returns the backend for a name and device, :func:`available_backends` those that run on a
device. Importing this package imports neither triton nor a compiled extension.
"""

from __future__ import annotations

from .protocol import Backend
from .registry import BACKENDS, available_backends, get_backend, unavailable_reason

__all__ = ["BACKENDS", "Backend", "available_backends", "get_backend", "unavailable_reason"]
