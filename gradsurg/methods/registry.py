"""Method names → classes, and the lookup used by every public entry point.

Every module of this package that defines a :class:`Method` subclass with a ``name`` registers
it: adding a method is adding one file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from .base import DoubleBackwardMethod, GramMethod, LossWeighting, MatrixMethod, Method

__all__ = ["SETUP_ARGUMENTS", "available_methods", "build_method", "get_method", "method_class", "resolve_method"]

#: The training-setup arguments a method may declare in ``Method.needs``.
SETUP_ARGUMENTS = frozenset({"num_tasks", "layer"})

# The classic methods first, in the order users meet them; the rest alphabetically.
_FIRST = ("sum", "mean", "pcgrad", "gradvac", "cagrad", "mgda", "imtl_g")
_BASES = (Method, GramMethod, MatrixMethod, LossWeighting, DoubleBackwardMethod)
_METHODS: dict[str, type[Method]] = {}


def _discover() -> dict[str, type[Method]]:
    if not _METHODS:
        package = importlib.import_module(__package__)
        found: dict[str, type[Method]] = {}
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_") or info.name in ("base", "registry"):
                continue
            module = importlib.import_module(f"{__package__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, Method) and cls not in _BASES and cls.name and cls.__module__ == module.__name__:
                    if cls.name in found and found[cls.name] is not cls:
                        raise RuntimeError(f"two methods are named {cls.name!r}")
                    found[cls.name] = cls
        order = [n for n in _FIRST if n in found] + sorted(n for n in found if n not in _FIRST)
        _METHODS.update((n, found[n]) for n in order)
    return _METHODS


def available_methods() -> list[str]:
    """Names accepted by :func:`get_method`, ``GradSurgery(method=...)`` and :func:`aggregate`."""
    return list(_discover())


def method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (``ValueError`` listing the known names otherwise)."""
    methods = _discover()
    try:
        return methods[name]
    except (KeyError, TypeError):
        raise ValueError(f"method: unknown method {name!r}; known methods: {', '.join(methods)}") from None


def get_method(name: str, /, **kwargs: Any) -> Method:
    """Build the method registered as ``name`` with its keyword options.

    >>> get_method("cagrad", c=0.5)
    CAGrad(c=0.5, rescale=1)

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
    """
    return method_class(name)(**kwargs)


def build_method(name: str, /, *, num_tasks: int | None = None, layer: Any = None, **options: Any) -> Method:
    """Build the method ``name`` for a training setup, passing only what it declares it needs.

    ``num_tasks`` and ``layer`` (the parameters of the last shared layer) describe the setup;
    each is handed to the method only if its class lists it in :attr:`Method.needs`, so one call
    builds any registered method:

    >>> build_method("uw", num_tasks=3, layer=None)
    UW(num_tasks=3)
    >>> build_method("pcgrad", num_tasks=3)
    PCGrad(seed=0)

    Raises:
        ValueError: unknown ``name``, or a needed setup argument that is ``None``.
    """
    cls = method_class(name)
    setup = {"num_tasks": num_tasks, "layer": layer}
    for key in sorted(cls.needs):
        if setup[key] is None:
            raise ValueError(f"{key}: method {name!r} needs it to be built")
        options[key] = setup[key]
    return cls(**options)


def resolve_method(method: str | Method) -> Method:
    """Return ``method`` itself if it is a :class:`Method`, else build it by name."""
    if isinstance(method, Method):
        return method
    if isinstance(method, str):
        return get_method(method)
    raise TypeError(f"method: expected a method name or a gradsurg Method, got {type(method).__name__}")
