"""Choosing the kernel backend for a device, and reporting the choice.

A backend is a module with ``NAME``, ``flatten_into``, ``gram``, ``gram_lists`` and
``combine_into``, all with the semantics of :mod:`gradsurg.kernels.reference` (the oracle).
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

from . import cpp, reference

__all__ = ["BACKENDS", "get_backend"]

#: Backend names accepted by ``GradSurgery(backend=...)``.
BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")

_warned_fallback = False


def _triton() -> ModuleType | None:
    try:
        return importlib.import_module("gradsurg.kernels.triton")
    except ImportError:
        return None


def _cuda() -> ModuleType | None:
    try:
        module = importlib.import_module("gradsurg.kernels.cuda")
    except ImportError:
        return None
    return module if module.available() else None


def _warn_cpp_fallback() -> None:
    global _warned_fallback
    if not _warned_fallback and os.environ.get("GRADSURG_NO_EXT") != "1":
        _warned_fallback = True
        warnings.warn(
            f"gradsurg: the C++ CPU kernels are unavailable ({cpp.load_error()}); "
            "using the slower pure-torch backend",
            RuntimeWarning,
            stacklevel=3,
        )


def get_backend(name: str, device: torch.device) -> ModuleType:
    """Return the kernel module for backend ``name`` on ``device``.

    ``"auto"`` picks, on CUDA tensors, cuda → triton → torch, and on CPU tensors cpp → torch
    (with a one-time warning when the C++ extension is missing, unless ``GRADSURG_NO_EXT=1``).
    Triton kernels run on CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1``,
    set before triton is imported), which is how they are tested without a GPU.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
        RuntimeError: an explicitly requested backend that is unavailable for ``device``.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    device = torch.device(device)
    if name == "torch":
        return reference
    if name == "auto":
        if device.type == "cuda":
            return _cuda() or _triton() or reference
        if device.type == "cpu":
            if cpp.available():
                return cpp
            _warn_cpp_fallback()
        return reference
    if name == "cpp":
        if device.type != "cpu":
            raise RuntimeError(f"backend: 'cpp' runs on CPU tensors, got {device}")
        if not cpp.available():
            raise RuntimeError(f"backend: 'cpp' is unavailable: {cpp.load_error()}")
        return cpp
    if name == "triton":
        module = _triton()
        if module is None:
            raise RuntimeError("backend: 'triton' needs the triton package (pip install triton)")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"backend: 'triton' runs on CUDA tensors (got {device}); CPU tensors only under "
                "TRITON_INTERPRET=1, for testing"
            )
        return module
    module = _cuda()
    if module is None or device.type != "cuda":
        raise RuntimeError(
            f"backend: 'cuda' needs CUDA tensors and the gradsurg._cuda extension (device {device})"
        )
    return module
