"""Adapters to the peer libraries that the comparison benchmarks measure gradsurg against.

* **TorchJD** (0.18.0): :func:`torchjd_pair` builds a ``torchjd.aggregation`` aggregator and the
  gradsurg method configured to the same definition; :func:`torchjd_note` says where the two
  still differ (approximate solvers, random orders). TorchJD's own step after its backward is
  ``torchjd.autojac.jac_to_grad(params, aggregator)``: every parameter carries a ``.jac`` of shape
  ``(T, *param.shape)``, and the aggregate is written (accumulated) into ``.grad``.
* **LibMTL** (1.1.5): :func:`libmtl_host` builds an instance of a LibMTL weighting class hosted
  on a given list of shared parameters, with LibMTL's full path (:meth:`LibMTLHost.backward`)
  and an aggregation-only path on given per-task gradients
  (:meth:`LibMTLHost.aggregate_lists`); :func:`libmtl_note` says where LibMTL's definition
  differs from gradsurg's.

Nothing of either library is copied here: the adapters only call their public classes (and,
for LibMTL, the methods its weighting mixins expect their model to provide).

Every failure to provide a peer raises :class:`PeerUnavailable` with a reason meant for a person.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import gradsurg
from gradsurg.methods import Method

__all__ = [
    "CAGRAD_C",
    "LIBMTL_GRADVAC_BETA",
    "LIBMTL_METHODS",
    "TORCHJD_METHODS",
    "LibMTLHost",
    "PeerUnavailable",
    "libmtl_host",
    "libmtl_method",
    "libmtl_note",
    "load_libmtl_weighting",
    "torchjd_note",
    "torchjd_pair",
    "torchjd_version",
]

#: CAGrad's radius used for every library: LibMTL's default ``calpha`` (TorchJD has no default).
CAGRAD_C = 0.5
#: LibMTL's default GradVac EMA rate (its argument parser's ``--beta``).
LIBMTL_GRADVAC_BETA = 0.5

#: gradsurg names with a TorchJD aggregator.
TORCHJD_METHODS = (
    "mean", "pcgrad", "mgda", "imtl_g", "upgrad", "cagrad", "config", "dualproj", "aligned_mtl",
    "nash_mtl", "gradvac",
)

#: gradsurg name → LibMTL weighting class name.
LIBMTL_METHODS = {
    "mean": "EW",
    "pcgrad": "PCGrad",
    "mgda": "MGDA",
    "imtl_g": "IMTL",
    "cagrad": "CAGrad",
    "gradvac": "GradVac",
}


class PeerUnavailable(Exception):
    """A peer library (or the part of it a method needs) cannot be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- TorchJD ------------------------------------------------------------------------------------

_NORM_EPS = (
    "same regularised problem (reg_eps=1e-4 both) while trace(G) ≥ 1e-4: below that TorchJD's "
    "norm_eps zeroes its normalised G (gradsurg has no such threshold)"
)
_TORCHJD_NOTES = {
    "mean": "",
    "pcgrad": (
        "random orders differ (TorchJD: one torch.randperm per task from the global RNG; "
        "gradsurg: its own seeded generator); the check replays TorchJD's orders"
    ),
    "mgda": (
        "TorchJD solves the min-norm problem approximately (Frank–Wolfe, epsilon=1e-3, "
        "≤100 iterations); gradsurg exactly (Wolfe's algorithm)"
    ),
    "imtl_g": "",
    "upgrad": _NORM_EPS,
    "dualproj": _NORM_EPS,
    "cagrad": (
        "TorchJD solves the dual with cvxpy/Clarabel (interior point): its weights are accurate "
        "to ~1e-4 relative; gradsurg's root is exact (both c=0.5, no rescale); TorchJD's "
        "norm_eps zeroes its normalised G when trace(G) < 1e-4"
    ),
    "config": "",
    "aligned_mtl": "",
    "nash_mtl": (
        "TorchJD stops its convex-concave iterations after ≤20 cvxpy/ECOS solves (or once "
        "‖Gα − 1/α‖ < 1e-3), warm-started from the previous call; gradsurg solves Gα = 1/α "
        "exactly by damped Newton"
    ),
    "gradvac": (
        "random orders differ (TorchJD: torch.randperm of the other tasks per task, from the "
        "global RNG); the check replays them (both beta=0.5)"
    ),
}


def _torchjd_aggregation() -> types.ModuleType:
    try:
        return importlib.import_module("torchjd.aggregation")
    except ImportError as exc:
        raise PeerUnavailable(
            f"torchjd is not installed ({exc}); pip install 'torchjd[full]==0.18.0'"
        ) from None


def torchjd_version() -> str:
    """The installed TorchJD version (``PeerUnavailable`` if it is missing)."""
    _torchjd_aggregation()
    from importlib.metadata import version

    return version("torchjd")


def torchjd_pair(name: str, *, num_tasks: int | None = None) -> tuple[Any, Method]:
    """A TorchJD aggregator and the gradsurg method configured to the same definition.

    Args:
        name: one of :data:`TORCHJD_METHODS`.
        num_tasks: T; required for ``nash_mtl`` (TorchJD's ``NashMTL`` is built for a fixed T).

    Returns:
        ``(aggregator, method)``. The options that make them the same definition:
        UPGrad/DualProj — TorchJD's default projector (``reg_eps = 1e-4`` on the trace-normalised
        G) ↔ gradsurg ``reg_eps=1e-4``; CAGrad — ``c = 0.5`` both, gradsurg ``rescale=0`` (TorchJD
        does not rescale); Nash-MTL — ``max_norm = 1.0``, ``update_weights_every = 1`` both;
        Aligned-MTL — ``scale_mode="min"``, mean preference both; GradVac — ``beta = 0.5``
        (TorchJD's default). :func:`torchjd_note` says what still differs.

    Raises:
        PeerUnavailable: ``name`` has no TorchJD counterpart here, or TorchJD, or an extra the
            aggregator needs (quadprog/qpsolvers, cvxpy, clarabel, ecos), is not installed.
        ValueError: ``nash_mtl`` without ``num_tasks``.
    """
    if name not in TORCHJD_METHODS:
        raise PeerUnavailable(
            f"torchjd: no aggregator paired with gradsurg's {name!r} "
            f"(paired: {', '.join(TORCHJD_METHODS)})"
        )
    agg = _torchjd_aggregation()
    if name == "nash_mtl" and not num_tasks:
        raise ValueError("num_tasks: TorchJD's NashMTL needs the number of tasks")
    builders = {
        "mean": lambda: (agg.Mean(), gradsurg.get_method("mean")),
        "pcgrad": lambda: (agg.PCGrad(), gradsurg.get_method("pcgrad")),
        "mgda": lambda: (agg.MGDA(), gradsurg.get_method("mgda")),
        "imtl_g": lambda: (agg.IMTLG(), gradsurg.get_method("imtl_g")),
        "upgrad": lambda: (agg.UPGrad(), gradsurg.get_method("upgrad", reg_eps=1e-4)),
        "dualproj": lambda: (agg.DualProj(), gradsurg.get_method("dualproj", reg_eps=1e-4)),
        "cagrad": lambda: (agg.CAGrad(c=CAGRAD_C), gradsurg.get_method("cagrad", c=CAGRAD_C, rescale=0)),
        "config": lambda: (agg.ConFIG(), gradsurg.get_method("config")),
        "aligned_mtl": lambda: (
            agg.AlignedMTL(scale_mode="min"),
            gradsurg.get_method("aligned_mtl", scale_mode="min", pref="mean"),
        ),
        "nash_mtl": lambda: (
            agg.NashMTL(n_tasks=num_tasks, max_norm=1.0, update_weights_every=1),
            gradsurg.get_method("nash_mtl", max_norm=1.0, update_weights_every=1),
        ),
        "gradvac": lambda: (agg.GradVac(beta=0.5), gradsurg.get_method("gradvac", beta=0.5)),
    }
    try:
        return builders[name]()
    except ImportError as exc:
        # TorchJD checks its optional extras when an aggregator is built.
        raise PeerUnavailable(f"torchjd {name}: {exc}") from None


def torchjd_note(name: str) -> str:
    """Why TorchJD's ``name`` differs from gradsurg's as configured by :func:`torchjd_pair`
    (empty when both compute the same thing up to rounding)."""
    return _TORCHJD_NOTES.get(name, f"TorchJD has no aggregator paired with {name!r}")


# -- LibMTL -------------------------------------------------------------------------------------

_LIBMTL_NOTES = {
    "mean": (
        "LibMTL's EW sums the losses (one backward of Σ L_t): its update is gradsurg's 'sum' = "
        "T × 'mean'; it has no gradient-level step, so aggregation-only time is the accumulation "
        "Σ_t g_t into .grad that autograd would do"
    ),
    "pcgrad": (
        "random orders differ (LibMTL: random.shuffle of all T tasks per task, its own index "
        "included; gradsurg: its own generator, own index skipped); the check replays LibMTL's "
        "orders with pcgrad_weights — equal unless a projection on the task's own gradient "
        "triggers, which only LibMTL does"
    ),
    "mgda": (
        "LibMTL (mgda_gn='none') solves the min-norm problem approximately: the closed-form pair "
        "with γ clipped to [0.001, 0.999], then Frank–Wolfe (stop at Σ|Δw| < 1e-5, ≤250 "
        "iterations, None past that), with an fp32 Gram; gradsurg exactly (Wolfe's algorithm)"
    ),
    "imtl_g": (
        "LibMTL's IMTL is the IMTL-L + IMTL-G hybrid: losses become e^s·L − s with learnable s; "
        "at s = 0 (its initial value) the shared gradients are unchanged and the update is "
        "IMTL-G's closed form (fp32 inverse); after optimizer steps on s the task gradients are "
        "rescaled by e^s"
    ),
    "cagrad": (
        "LibMTL solves the dual with scipy.optimize.minimize (SLSQP, default tolerances; "
        "+1e-8 guards) on an fp32 Gram, then rescales by 1 + c² (calpha=0.5, rescale=1, "
        "gradsurg cagrad(c=0.5, rescale=1)); its objective hard-codes T = 3"
    ),
    "gradvac": (
        "LibMTL (beta=0.5) updates a pair's EMA target only when it corrected the pair "
        "(gradsurg and the paper: always) — identical at the first step, where targets are 0; "
        "orders from random.shuffle are replayed"
    ),
}


def _bare_package(pkg_dir: Path) -> types.ModuleType:
    module = types.ModuleType("LibMTL")
    module.__path__ = [str(pkg_dir)]  # type: ignore[attr-defined]
    module.__file__ = None
    spec = importlib.machinery.ModuleSpec("LibMTL", None, is_package=True)
    spec.submodule_search_locations = [str(pkg_dir)]
    module.__spec__ = spec
    module.__package__ = "LibMTL"
    module._gradsurg_bare = True  # type: ignore[attr-defined]
    return module


def _forget_libmtl() -> None:
    for key in [k for k in sys.modules if k == "LibMTL" or k.startswith("LibMTL.")]:
        del sys.modules[key]


def _libmtl_package_dir(path: str | None) -> Path:
    if path is not None:
        given = Path(path)
        if (given / "LibMTL" / "weighting").is_dir():
            return (given / "LibMTL").resolve()
        if given.name == "LibMTL" and (given / "weighting").is_dir():
            return given.resolve()
        raise PeerUnavailable(f"libmtl: no LibMTL package (with weighting/) at {path}")
    try:
        spec = importlib.util.find_spec("LibMTL")
    except (ImportError, ValueError) as exc:
        raise PeerUnavailable(f"libmtl: cannot locate LibMTL ({exc})") from None
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable(
            "libmtl: LibMTL is not installed (pip install --no-deps LibMTL==1.1.5, or pass its path)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def load_libmtl_weighting(path: str | None = None) -> types.ModuleType:
    """Import ``LibMTL.weighting`` without running ``LibMTL/__init__.py``.

    Args:
        path: a directory containing ``LibMTL/``, or the ``LibMTL`` package directory itself;
            by default the installed package (found without importing it).

    Returns:
        The ``LibMTL.weighting`` module.

    Raises:
        PeerUnavailable: no LibMTL package there, or its weighting modules fail to import.
    """
    # LibMTL's package __init__ imports its models, and LibMTL/model/resnet.py imports
    # torchvision, which cannot be installed beside our CPU torch. The weighting strategies only
    # need torch, numpy (and scipy for CAGrad), so the package is registered as a bare module
    # whose __path__ is its directory: submodules import normally, __init__ never runs.
    pkg_dir = _libmtl_package_dir(path)
    current = sys.modules.get("LibMTL")
    if current is not None:
        locations = [str(Path(p).resolve()) for p in getattr(current, "__path__", [])]
        if str(pkg_dir) not in locations:
            _forget_libmtl()  # another LibMTL directory was loaded before: switch to this one
    if "LibMTL" not in sys.modules:
        sys.modules["LibMTL"] = _bare_package(pkg_dir)
    try:
        return importlib.import_module("LibMTL.weighting")
    except Exception as exc:
        if getattr(sys.modules.get("LibMTL"), "_gradsurg_bare", False):
            _forget_libmtl()
        raise PeerUnavailable(
            f"libmtl: importing LibMTL.weighting from {pkg_dir} failed: {exc!r}"
        ) from None


class LibMTLHost:
    """Mixin put in front of a LibMTL weighting class: the model-side API its methods call.

    LibMTL's weightings are mixins of its model class (``class MTLmodel(architecture,
    weighting)``): their ``backward`` calls ``get_share_params``, ``zero_grad_share_params`` and
    reads ``task_num``, ``device``, ``rep_grad``, ``epoch``. This host provides them for a given
    list of shared parameters (``rep_grad = False``: gradients of the parameters).

    Built by :func:`libmtl_host`; use :meth:`backward` and :meth:`aggregate_lists`.
    """

    def _host_setup(self, shared: list[Tensor], num_tasks: int, name: str, weight_args: dict[str, Any]) -> None:
        self._share = list(shared)
        self.task_num = num_tasks
        self.task_name = [f"task{t}" for t in range(num_tasks)]
        self.device = shared[0].device
        self.rep_grad = False
        self.multi_input = False
        self.epoch = 0
        self.method_name = name
        self.weight_args = dict(weight_args)
        self._given: list[list[Tensor]] | None = None
        self._holders: list[Tensor] | None = None
        self.init_param()

    def get_share_params(self) -> list[Tensor]:
        """The shared parameters (LibMTL iterates over them in this order)."""
        return self._share

    def zero_grad_share_params(self) -> None:
        """Zero the shared gradients in place.

        LibMTL 1.1.5 was written for torch 1.x, where ``Module.zero_grad()`` zeroed ``.grad``
        in place; torch ≥ 2 sets it to None, after which its ``_reset_grad`` (which assigns
        ``param.grad.data``) fails. The old semantics are kept here so LibMTL runs as designed.
        """
        for p in self._share:
            if p.grad is not None:
                p.grad.detach_()
                p.grad.zero_()

    def _compute_grad(self, losses: Any, mode: str, rep_grad: bool = False) -> Tensor:
        if self._given is None:
            return super()._compute_grad(losses, mode, rep_grad)  # type: ignore[misc]
        # Aggregation only: the per-task backward is replaced by handing LibMTL each task's given
        # gradients as .grad; its own _grad2vec flattens them into its own (T, P) buffer.
        grads = torch.zeros(self.task_num, self.grad_dim).to(self.device)
        for t, row in enumerate(self._given):
            for p, g in zip(self._share, row):
                p.grad = g
            grads[t] = self._grad2vec()
        # The zero_grad LibMTL runs after each backward would zero the caller's tensors; instead
        # .grad is rebound to host-owned tensors, which LibMTL's _reset_grad then overwrites.
        if self._holders is None:
            self._holders = [torch.zeros_like(p) for p in self._share]
        for p, holder in zip(self._share, self._holders):
            p.grad = holder
        return grads

    def backward(self, losses: Sequence[Tensor] | Tensor) -> Any:
        """LibMTL's full path: per-task backward passes, its aggregation, ``.grad`` written.

        As in LibMTL's trainer, zero the gradients first (``p.grad = None``): its first task's
        backward accumulates into whatever ``.grad`` holds. LibMTL flattens the task gradients
        into float32 buffers whatever the parameters' dtype.

        Args:
            losses: T scalar losses (list or 1-D tensor, as LibMTL's trainer passes them).

        Returns:
            What LibMTL's ``backward`` returns (its task weights, a numpy array, or None).
        """
        if not isinstance(losses, Tensor):
            losses = torch.stack(list(losses))
        return super().backward(losses, **self.weight_args)  # type: ignore[misc]

    def aggregate_lists(self, per_task_grads: Sequence[Sequence[Tensor]]) -> Any:
        """The same LibMTL ``backward`` on given gradients: ``per_task_grads[t][k]`` is task t's
        gradient of shared parameter k. Writes the aggregate into the parameters' ``.grad``.

        LibMTL's own ``_grad2vec`` flattening, its aggregation math and its ``_reset_grad`` run
        unchanged; only the per-task backward is replaced (see :meth:`_compute_grad`). EW has no
        gradient-level step in LibMTL (it differentiates Σ L_t once), so for ``mean`` the given
        gradients are summed into ``.grad`` as autograd's accumulation would.
        """
        lists = [list(row) for row in per_task_grads]
        if len(lists) != self.task_num:
            raise ValueError(f"per_task_grads: expected {self.task_num} tasks, got {len(lists)}")
        shapes = [p.shape for p in self._share]
        for t, row in enumerate(lists):
            if [g.shape for g in row] != shapes:
                raise ValueError(f"per_task_grads: task {t}'s shapes differ from the shared parameters'")
        if self.method_name == "mean":
            for k, p in enumerate(self._share):
                total = lists[0][k].clone()
                for row in lists[1:]:
                    total += row[k]
                p.grad = total
            return None
        # Dummy losses: LibMTL's backward reads them (IMTL rescales them, MGDA takes .item()),
        # but the replaced gradient step never differentiates them.
        losses = torch.zeros(self.task_num, device=self.device)
        self._given = lists
        try:
            return self.backward(losses)
        finally:
            self._given = None


def libmtl_host(
    name: str, shared_params: Sequence[Tensor], num_tasks: int, path: str | None = None
) -> LibMTLHost:
    """A LibMTL weighting hosted on ``shared_params``, for gradsurg method ``name``.

    Args:
        name: a key of :data:`LIBMTL_METHODS` (``mean`` → EW, ``pcgrad`` → PCGrad, ``mgda`` →
            MGDA, ``imtl_g`` → IMTL, ``cagrad`` → CAGrad, ``gradvac`` → GradVac).
        shared_params: leaf tensors with ``requires_grad``; their ``.grad`` receives the result.
        num_tasks: T.
        path: where LibMTL is (see :func:`load_libmtl_weighting`).

    The weighting arguments are LibMTL's argument-parser defaults: MGDA ``mgda_gn='none'``,
    CAGrad ``calpha=0.5, rescale=1``, GradVac ``beta=0.5``.

    Raises:
        PeerUnavailable: ``name`` has no LibMTL counterpart, LibMTL is missing, or the method
            cannot run for these arguments (LibMTL's CAGrad only runs with T = 3).
        ValueError: bad parameters.
    """
    if name not in LIBMTL_METHODS:
        raise PeerUnavailable(
            f"libmtl: no weighting paired with gradsurg's {name!r} "
            f"(paired: {', '.join(LIBMTL_METHODS)})"
        )
    params = list(shared_params)
    if not params or not all(isinstance(p, Tensor) and p.requires_grad and p.is_leaf for p in params):
        raise ValueError("shared_params: expected leaf tensors that require grad")
    if num_tasks < 2:
        raise ValueError(f"num_tasks: LibMTL's weightings need at least 2 tasks, got {num_tasks}")
    if name == "cagrad" and num_tasks != 3:
        raise PeerUnavailable(
            f"libmtl cagrad: LibMTL 1.1.5's CAGrad objective reshapes the weights to (1, 3), so it "
            f"only runs with 3 tasks (T={num_tasks})"
        )
    weighting = load_libmtl_weighting(path)
    base = getattr(weighting, LIBMTL_METHODS[name])
    weight_args = {
        "mgda": {"mgda_gn": "none"},
        "cagrad": {"calpha": CAGRAD_C, "rescale": 1},
        "gradvac": {"beta": LIBMTL_GRADVAC_BETA},
    }.get(name, {})
    cls = type(f"Hosted{base.__name__}", (LibMTLHost, base), {})
    host = cls()
    host._host_setup(params, num_tasks, name, weight_args)
    return host


def libmtl_method(name: str) -> Method:
    """The gradsurg method with LibMTL's definition of ``name``: ``sum`` for EW (it sums the
    losses), ``cagrad(c=0.5, rescale=1)``, ``gradvac(beta=0.5)``, else the same name. PCGrad and
    GradVac additionally need LibMTL's orders replayed, and MGDA is compared with the exact
    solution (see :func:`libmtl_note`)."""
    if name not in LIBMTL_METHODS:
        raise PeerUnavailable(f"libmtl: no weighting paired with gradsurg's {name!r}")
    if name == "mean":
        return gradsurg.get_method("sum")
    if name == "cagrad":
        return gradsurg.get_method("cagrad", c=CAGRAD_C, rescale=1)
    if name == "gradvac":
        return gradsurg.get_method("gradvac", beta=LIBMTL_GRADVAC_BETA)
    return gradsurg.get_method(name)


def libmtl_note(name: str) -> str:
    """Why LibMTL's ``name`` differs from gradsurg's (empty if it does not)."""
    return _LIBMTL_NOTES.get(name, f"LibMTL has no weighting paired with {name!r}")
