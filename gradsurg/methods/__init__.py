"""Gradient-surgery methods: each turns the T×T Gram matrix of the task gradients into weights."""

from .base import DoubleBackwardMethod, GramMethod, LossWeighting, MatrixMethod, Method
from .cagrad import CAGrad
from .gradvac import GradVac
from .imtl_g import IMTLG
from .mean import Mean
from .mgda import MGDA
from .pcgrad import PCGrad
from .registry import available_methods, build_method, get_method, method_class, resolve_method
from .sum import Sum

__all__ = [
    "IMTLG",
    "MGDA",
    "CAGrad",
    "DoubleBackwardMethod",
    "GradVac",
    "GramMethod",
    "LossWeighting",
    "MatrixMethod",
    "Mean",
    "Method",
    "PCGrad",
    "Sum",
    "available_methods",
    "build_method",
    "get_method",
    "method_class",
    "resolve_method",
]


def __getattr__(name: str) -> type[Method]:
    """Every registered method class by its class name (``gradsurg.methods.UPGrad``)."""
    from .registry import available_methods, method_class

    for method_name in available_methods():
        cls = method_class(method_name)
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'gradsurg.methods' has no attribute {name!r}")
