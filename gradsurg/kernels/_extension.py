"""Lazy loading of a compiled extension, with the reason it is unavailable kept for messages."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

__all__ = ["LazyExtension"]


class LazyExtension:
    """Imports ``gradsurg.<module>`` on first use, never at ``import gradsurg``.

    Args:
        backend: the backend name used in error messages.
        module: the extension's module name inside the package (``"_C"``).
        hint: how to build it, appended to the error raised by :meth:`require`.
        precondition: returns why the extension cannot work here (e.g. a CPU-only torch), or
            None; checked before importing.
    """

    def __init__(self, backend: str, module: str, hint: str, precondition: Callable[[], str | None] = lambda: None) -> None:
        self.backend = backend
        self.module_name = module
        self.hint = hint
        self.precondition = precondition
        self._module: ModuleType | None = None
        self._error: str | None = None

    def load(self) -> ModuleType | None:
        """The extension module, or None if it cannot be loaded (see :attr:`error`)."""
        if self._module is None and self._error is None:
            reason = "GRADSURG_NO_EXT=1 is set" if os.environ.get("GRADSURG_NO_EXT") == "1" else self.precondition()
            if reason is not None:
                self._error = reason
            else:
                try:
                    import torch  # noqa: F401  (the extension needs torch's symbols loaded first)

                    self._module = importlib.import_module(f"gradsurg.{self.module_name}")
                except ImportError as exc:
                    self._error = f"the extension gradsurg.{self.module_name} is not built ({exc})"
        return self._module

    @property
    def error(self) -> str | None:
        """Why the extension is unavailable, or None."""
        self.load()
        return self._error

    def require(self) -> ModuleType:
        """The extension module, or a RuntimeError naming the backend, the reason and the fix."""
        module = self.load()
        if module is None:
            raise RuntimeError(f"backend: {self.backend!r} is unavailable: {self._error}. {self.hint}")
        return module
