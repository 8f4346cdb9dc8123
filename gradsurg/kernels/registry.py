"""The one registry of kernel backends: names, availability per device, and ``"auto"``.

Each backend is registered once (:data:`_SPECS`) with

- its name (what ``GradSurgery(backend=...)`` accepts) and the module implementing it, imported
  on first use only (so ``import gradsurg`` imports neither triton nor a compiled extension);
- an availability check per device, returning None or why the backend cannot run there;
- the device types on which ``"auto"`` may pick it, and its priority there: on CUDA tensors
  cuda → triton → torch, on CPU tensors cpp → torch, elsewhere torch;
- whether ``"auto"`` passing over it because it is unavailable deserves a one-time warning
  (the C++ CPU kernels: a missing build makes CPU steps several times slower), unless
  ``GRADSURG_NO_EXT=1`` says the extension was left out on purpose.

Adding a backend is one more :class:`_Spec` here plus its conformance run (the test is
parametrised over this registry).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import torch

from .protocol import Backend

__all__ = ["BACKENDS", "available_backends", "get_backend", "unavailable_reason"]


@dataclass(frozen=True)
class _Spec:
    name: str
    module: str
    #: Why the backend cannot run on tensors of this device (None: it can), phrased to follow
    #: "backend: 'name' is unavailable: ". Called with the imported module.
    check: Callable[[ModuleType, torch.device], str | None]
    #: Device types on which "auto" may pick it (None: every device type).
    auto_devices: frozenset[str] | None
    #: Higher first among the "auto" candidates of a device type.
    priority: int
    #: What "auto" warns about (once) when it passes over this backend because it is unavailable.
    fallback_warning: str | None = None


@cache
def _load(module: str) -> ModuleType | str:
    """The backend's module, or why it cannot be imported (e.g. triton is not installed)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        return f"{exc}"


def _always(module: ModuleType, device: torch.device) -> str | None:
    return None


def _cpp_check(module: ModuleType, device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"it runs on CPU tensors, got {device}"
    if not module.available():
        return module.load_error()
    return None


def _triton_check(module: ModuleType, device: torch.device) -> str | None:
    if device.type == "cuda" or (device.type == "cpu" and module.interpreted()):
        return None
    return (
        f"it runs on CUDA tensors (got {device}); CPU tensors only under TRITON_INTERPRET=1 (set "
        "before triton is imported), for testing"
    )


def _cuda_check(module: ModuleType, device: torch.device) -> str | None:
    if not module.available():
        return module.load_error()
    if device.type != "cuda":
        return f"it runs on CUDA tensors, got {device}"
    return None


_SPECS = (
    _Spec("torch", "gradsurg.kernels.reference", _always, auto_devices=None, priority=0),
    _Spec(
        "cpp",
        "gradsurg.kernels.cpp",
        _cpp_check,
        auto_devices=frozenset({"cpu"}),
        priority=10,
        fallback_warning="the C++ CPU kernels are unavailable ({reason}); using the slower pure-torch backend",
    ),
    _Spec("triton", "gradsurg.kernels.triton", _triton_check, auto_devices=frozenset({"cuda"}), priority=20),
    _Spec("cuda", "gradsurg.kernels.cuda", _cuda_check, auto_devices=frozenset({"cuda"}), priority=30),
)
_BY_NAME = {spec.name: spec for spec in _SPECS}

#: Backend names accepted by ``GradSurgery(backend=...)``, ``"auto"`` first.
BACKENDS: tuple[str, ...] = ("auto", *(spec.name for spec in _SPECS))

_IMPORT_HINTS = {"triton": "it needs the triton package (pip install triton)"}

_warned: set[str] = set()


def _resolve(spec: _Spec, device: torch.device) -> tuple[Backend | None, str | None]:
    """(module, None) if ``spec`` runs on ``device``, else (None, why not)."""
    loaded = _load(spec.module)
    if isinstance(loaded, str):
        hint = _IMPORT_HINTS.get(spec.name, f"{spec.module} cannot be imported")
        return None, f"{hint} ({loaded})"
    reason = spec.check(loaded, device)
    return (loaded, None) if reason is None else (None, reason)


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")


def unavailable_reason(name: str, device: torch.device | str) -> str | None:
    """Why backend ``name`` cannot run on ``device`` tensors, or None if it can.

    Raises:
        ValueError: unknown ``name`` (``"auto"`` is always available).
    """
    _check_name(name)
    if name == "auto":
        return None
    return _resolve(_BY_NAME[name], torch.device(device))[1]


def available_backends(device: torch.device | str) -> list[str]:
    """The concrete backends (not ``"auto"``) that run on ``device`` tensors, in registry order."""
    device = torch.device(device)
    return [spec.name for spec in _SPECS if _resolve(spec, device)[0] is not None]


@cache
def _auto_candidates(device_type: str) -> tuple[_Spec, ...]:
    eligible = [s for s in _SPECS if s.auto_devices is None or device_type in s.auto_devices]
    return tuple(sorted(eligible, key=lambda s: -s.priority))


def _auto(device: torch.device) -> Backend:
    skipped: list[tuple[_Spec, str]] = []
    for spec in _auto_candidates(device.type):
        backend, reason = _resolve(spec, device)
        if backend is not None:
            for passed, why in skipped:
                _warn_fallback(passed, why)
            return backend
        skipped.append((spec, reason or ""))
    raise RuntimeError(f"backend: no backend runs on {device} tensors")  # torch always does


def _warn_fallback(spec: _Spec, reason: str) -> None:
    if spec.fallback_warning is None or spec.name in _warned or os.environ.get("GRADSURG_NO_EXT") == "1":
        return
    _warned.add(spec.name)
    # get_backend → _auto → here: point at get_backend's caller.
    warnings.warn(f"gradsurg: {spec.fallback_warning.format(reason=reason)}", RuntimeWarning, stacklevel=4)


def get_backend(name: str, device: torch.device | str) -> Backend:
    """The kernel backend ``name`` for tensors on ``device``.

    ``"auto"`` picks, on CUDA tensors, cuda → triton → torch, on CPU tensors cpp → torch (with a
    one-time RuntimeWarning when the C++ extension is missing, unless ``GRADSURG_NO_EXT=1``), and
    torch elsewhere. Triton kernels run on CPU tensors only under the Triton interpreter
    (``TRITON_INTERPRET=1``, set before triton is imported), which is how they are tested
    without a GPU; ``"auto"`` never picks them there.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
        RuntimeError: an explicitly requested backend that cannot run on ``device`` (the
            message says why).
    """
    _check_name(name)
    device = torch.device(device)
    if name == "auto":
        return _auto(device)
    backend, reason = _resolve(_BY_NAME[name], device)
    if backend is None:
        raise RuntimeError(f"backend: {name!r} is unavailable: {reason}")
    return backend
