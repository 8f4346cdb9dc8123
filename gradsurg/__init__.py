"""gradsurg: conflict-aware multi-task optimisation by gradient surgery.

Wrap any optimizer (``GradSurgery``), or use the functional layer (``gramian``, ``aggregate``)
and the methods (``get_method``) directly.
"""

from ._version import __version__
from .functional import aggregate, gramian
from .methods import Method, available_methods, get_method
from .optim import GradSurgery
from .stats import SurgeryStats

__all__ = [
    "GradSurgery",
    "Method",
    "SurgeryStats",
    "__version__",
    "aggregate",
    "available_methods",
    "get_method",
    "gramian",
]
