"""Gradient-surgery methods: each turns the T×T Gram matrix of the task gradients into weights."""

from .base import LossWeighting, MatrixMethod, Method
from .cagrad import CAGrad
from .gradvac import GradVac
from .imtl_g import IMTLG
from .mean import Mean
from .mgda import MGDA
from .pcgrad import PCGrad
from .registry import available_methods, get_method, method_class, resolve_method
from .sum import Sum

__all__ = [
    "CAGrad",
    "GradVac",
    "IMTLG",
    "LossWeighting",
    "MGDA",
    "MatrixMethod",
    "Mean",
    "Method",
    "PCGrad",
    "Sum",
    "available_methods",
    "get_method",
    "method_class",
    "resolve_method",
]
