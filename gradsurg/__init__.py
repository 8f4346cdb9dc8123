"""gradsurg: conflict-aware multi-task optimisation by gradient surgery.

Wrap any optimizer (:class:`GradSurgery`), or call one step yourself (:func:`backward`); combine
given gradients (:func:`aggregate`, :func:`gramian`); pick a method (:mod:`gradsurg.methods`)
and a kernel backend (:mod:`gradsurg.kernels`); record a run's Gram trace (``trace=``) and
replay every Gram method on it (:func:`replay`, ``python -m gradsurg.report``). The names below are the whole public surface;
modules with a leading underscore are internal.
"""

from . import kernels, methods
from ._functional import aggregate, backward, gramian
from ._options import Options
from ._replay import Replay, replay
from ._stats import SurgeryStats
from ._trace import TraceStep, read_trace
from ._version import __version__
from .methods import Method, available_methods, build_method, get_method
from .optim import GradSurgery

__all__ = [
    "GradSurgery",
    "Method",
    "Options",
    "Replay",
    "SurgeryStats",
    "TraceStep",
    "__version__",
    "aggregate",
    "available_methods",
    "backward",
    "build_method",
    "get_method",
    "gramian",
    "kernels",
    "methods",
    "read_trace",
    "replay",
]
