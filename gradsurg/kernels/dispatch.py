"""Backward-compatible home of :func:`get_backend` and :data:`BACKENDS`.

The registry lives in :mod:`gradsurg.kernels.registry`; import from :mod:`gradsurg.kernels`
(``from gradsurg.kernels import BACKENDS, Backend, get_backend, available_backends``).
"""

from __future__ import annotations

from .registry import BACKENDS, available_backends, get_backend

__all__ = ["BACKENDS", "available_backends", "get_backend"]
