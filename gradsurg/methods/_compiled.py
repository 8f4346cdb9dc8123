"""Lookup of the compiled twins of the methods' small solvers in ``gradsurg._C`` (csrc/cpu).

The Gram methods' solves are chains of tiny dependent steps, where Python's per-call cost, not
arithmetic, is the time; each such solver has a C++ twin that follows the same steps. A method
uses the twin when the extension is built and has it (an older build may not) and
:data:`ENABLED` is set, else its numpy code; tests switch :data:`ENABLED` off to compare the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ENABLED", "solver"]

#: Whether methods may use the compiled solvers.
ENABLED = True
_FOUND: dict[str, Callable[..., Any] | None] = {}


def solver(name: str) -> Callable[..., Any] | None:
    """``gradsurg._C.<name>`` if :data:`ENABLED` and the extension is built and has it, else None."""
    if not ENABLED:
        return None
    if name not in _FOUND:
        from ..kernels.cpp import _EXT

        module = _EXT.load()
        _FOUND[name] = getattr(module, name, None) if module is not None else None
    return _FOUND[name]
