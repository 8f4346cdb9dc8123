"""Method names → classes, and the lookup used by every public entry point."""

from __future__ import annotations

from typing import Any

from .base import Method
from .cagrad import CAGrad
from .gradvac import GradVac
from .imtl_g import IMTLG
from .mean import Mean
from .mgda import MGDA
from .pcgrad import PCGrad
from .sum import Sum

__all__ = ["available_methods", "get_method", "resolve_method"]

_METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (Sum, Mean, PCGrad, GradVac, CAGrad, MGDA, IMTLG)
}


def available_methods() -> list[str]:
    """Names accepted by :func:`get_method`, ``GradSurgery(method=...)`` and :func:`aggregate`."""
    return list(_METHODS)


def get_method(name: str, /, **kwargs: Any) -> Method:
    """Build the method registered as ``name`` with its keyword options.

    >>> get_method("cagrad", c=0.5)
    CAGrad(c=0.5, rescale=1)

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
    """
    try:
        cls = _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"method: unknown method {name!r}; known methods: {', '.join(_METHODS)}"
        ) from None
    return cls(**kwargs)


def resolve_method(method: str | Method) -> Method:
    """Return ``method`` itself if it is a :class:`Method`, else build it by name."""
    if isinstance(method, Method):
        return method
    if isinstance(method, str):
        return get_method(method)
    raise TypeError(
        f"method: expected a method name or a gradsurg Method, got {type(method).__name__}"
    )
