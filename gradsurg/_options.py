"""The options of a surgery step, validated in one place.

:func:`make_options` checks every constructor option (of :class:`~gradsurg.GradSurgery` and of
:func:`gradsurg.backward`) against the others and against the method's kind;
:func:`check_backward` checks the arguments of one ``backward`` call against the options. Every
combination either works as documented or raises an error whose message starts with the name
of the argument to change. Nothing here changes any state.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ._buffer import check_floating
from ._dtensor import fsdp_handles
from ._losses import check_task_weights_arg
from .kernels import BACKENDS
from .methods import (
    DoubleBackwardMethod,
    GramMethod,
    LossWeighting,
    MatrixMethod,
    Method,
    build_method,
    method_class,
    resolve_method,
)

__all__ = [
    "ACCUMULATE_MODES",
    "DATA_PARALLEL_MODES",
    "NONFINITE_POLICIES",
    "REDUCTIONS",
    "Accumulate",
    "DataParallelMode",
    "Groups",
    "NonFinitePolicy",
    "Options",
    "Reduction",
    "check_backward",
    "make_options",
]

Reduction = Literal["sum", "mean"]
Accumulate = Literal["sum", "mean"]
NonFinitePolicy = Literal["raise", "skip"]
DataParallelMode = Literal["exact", "local", "none"]
Groups = Literal["parameter"] | Sequence[Iterable[Tensor]]

#: Accepted values of ``reduction=``, ``nonfinite=`` and ``data_parallel=`` (from the types).
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
ACCUMULATE_MODES: tuple[str, ...] = get_args(Accumulate)
NONFINITE_POLICIES: tuple[str, ...] = get_args(NonFinitePolicy)
DATA_PARALLEL_MODES: tuple[str, ...] = get_args(DataParallelMode)


@dataclass(frozen=True)
class Options:
    """The validated options of a surgery step (build with :func:`make_options`).

    Attributes are those of :class:`~gradsurg.GradSurgery`, normalised: ``method`` is a
    :class:`~gradsurg.Method`, ``shared`` a list of parameters or None, ``groups`` ``"parameter"``,
    a list of parameter lists or None, ``batch_tasks`` the number of tasks per autograd call
    (1: one pass per task), ``tasks`` the declared task names (or None), ``sharded`` whether the
    candidate parameters are FSDP2 shards.
    """

    method: Method
    shared: list[Tensor] | None = None
    task_weights: Sequence[float] | Mapping[str, float] | None = None
    reduction: Reduction = "sum"
    backend: str = "auto"
    nonfinite: NonFinitePolicy = "raise"
    scaler: Any = None
    data_parallel: DataParallelMode = "exact"
    process_group: Any = None
    refresh_every: int = 1
    groups: Literal["parameter"] | list[list[Tensor]] | None = None
    j_dtype: torch.dtype | None = None
    batch_tasks: int = 1
    tasks: tuple[str, ...] | None = None
    accumulate: Accumulate = "sum"
    trace: Path | None = None
    sharded: bool = False

    @property
    def scaler_enabled(self) -> bool:
        """Whether a GradScaler is attached and enabled (it scales the losses it is given)."""
        return self.scaler is not None and bool(self.scaler.is_enabled())

    def inv_scale(self) -> float | None:
        """1 / the GradScaler's current scale, or None without an enabled one."""
        return 1.0 / float(self.scaler.get_scale()) if self.scaler_enabled else None

    def scale(self, num_tasks: int) -> float:
        """The factor ``reduction`` applies to every weight."""
        return 1.0 / num_tasks if self.reduction == "mean" else 1.0

    @property
    def policy(self) -> NonFinitePolicy:
        """The non-finite policy in force: under an enabled GradScaler, which decides overflow
        itself, ``"skip"``."""
        return "skip" if self.scaler_enabled else self.nonfinite

    def without_process_group(self) -> Options:
        """These options with the default process group (a group cannot be pickled)."""
        return replace(self, process_group=None)


def _world_size(process_group: Any) -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


def make_options(
    method: str | Method,
    candidates: Sequence[Tensor],
    *,
    shared: Iterable[Tensor] | None = None,
    task_weights: Sequence[float] | Mapping[str, float] | Tensor | None = None,
    reduction: Reduction = "sum",
    backend: str = "auto",
    nonfinite: NonFinitePolicy = "raise",
    scaler: Any = None,
    data_parallel: DataParallelMode = "exact",
    process_group: Any = None,
    refresh_every: int = 1,
    groups: Groups | None = None,
    j_dtype: torch.dtype | None = None,
    batch_tasks: bool | int = False,
    tasks: Sequence[str] | None = None,
    accumulate: Accumulate = "sum",
    trace: str | os.PathLike | None = None,
) -> Options:
    """Check every option, alone and against the others and the method's kind.

    ``candidates`` are the parameters a step may treat as shared (the wrapped optimizer's
    trainable parameters, or those given to :func:`gradsurg.backward`); ``shared=`` and
    ``groups=`` must be among them. The meaning of each option is documented on
    :class:`~gradsurg.GradSurgery`.

    Raises:
        TypeError, ValueError: the message starts with the name of the offending argument.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite: expected one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    if isinstance(task_weights, Tensor):
        task_weights = task_weights.tolist()
    check_task_weights_arg(task_weights)
    if data_parallel not in DATA_PARALLEL_MODES:
        raise ValueError(f"data_parallel: expected one of {DATA_PARALLEL_MODES}, got {data_parallel!r}")
    if scaler is not None and not all(hasattr(scaler, a) for a in ("scale", "get_scale", "is_enabled", "unscale_")):
        raise TypeError(f"scaler: expected a torch.amp.GradScaler, got {type(scaler).__name__}")
    if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
        raise ValueError(f"refresh_every: expected an int ≥ 1, got {refresh_every!r}")
    if j_dtype is not None and not (isinstance(j_dtype, torch.dtype) and j_dtype.is_floating_point):
        raise ValueError(f"j_dtype: expected a floating torch.dtype (e.g. torch.bfloat16), got {j_dtype!r}")
    if not isinstance(batch_tasks, int) or (not isinstance(batch_tasks, bool) and batch_tasks < 1):
        raise ValueError(f"batch_tasks: expected True, False or a number of tasks per call ≥ 1, got {batch_tasks!r}")
    if trace is not None and not isinstance(trace, (str, os.PathLike)):
        raise TypeError(f"trace: expected a file path, got {type(trace).__name__}")
    trace_path = None if trace is None else Path(trace)
    if trace_path is not None and trace_path.is_dir():
        raise ValueError(f"trace: {trace_path} is a folder; give a file path (e.g. run/trace.jsonl)")
    declared = _check_tasks(tasks)
    if declared is not None and isinstance(task_weights, Mapping):
        unknown = sorted(set(map(str, task_weights)) - set(declared))
        if unknown:
            raise ValueError(f"task_weights: no declared task named {unknown}; the tasks are {list(declared)}")
    if accumulate not in ACCUMULATE_MODES:
        raise ValueError(f"accumulate: expected one of {ACCUMULATE_MODES}, got {accumulate!r}")
    if isinstance(method, str) and declared is not None and "num_tasks" in method_class(method).needs:
        # The declared tasks say how many there are: build the methods that need it.
        resolved = build_method(method, num_tasks=len(declared))
    else:
        resolved = resolve_method(method)
    name = resolved.name
    gram = isinstance(resolved, GramMethod)
    sharded = fsdp_handles(list(candidates), list(resolved.parameters())) is not None
    _check_distributed(resolved, data_parallel, process_group, sharded)
    if batch_tasks is not False and sharded:
        raise ValueError(
            "batch_tasks: the batched backward is not supported on FSDP2-sharded parameters; use batch_tasks=False"
        )
    if j_dtype is not None and not gram:
        raise ValueError(f"j_dtype: {name} works on J itself in the parameters' dtype; use j_dtype=None")
    if refresh_every > 1 and not gram:
        raise ValueError(
            f"refresh_every: {name} has no task weights to reuse between refreshes "
            "(only Gram methods do: matrix methods combine J itself, loss-space methods already "
            "take one backward)"
        )
    if batch_tasks is not False and not isinstance(resolved, (GramMethod, MatrixMethod)):
        raise ValueError(
            f"batch_tasks: {name} computes no per-task gradients of the shared parameters "
            "to batch; use batch_tasks=False"
        )
    candidate_ids = {id(p) for p in candidates}
    checked_groups = _check_groups(groups, resolved, refresh_every, candidate_ids)
    checked_shared = None if shared is None else _check_shared(shared, candidate_ids)
    # True: every task in one call (the chunk is capped at T each step).
    chunk = 1 << 30 if batch_tasks is True else max(1, int(batch_tasks))
    return Options(
        method=resolved,
        shared=checked_shared,
        task_weights=task_weights,
        reduction=reduction,
        backend=backend,
        nonfinite=nonfinite,
        scaler=scaler,
        data_parallel=data_parallel,
        process_group=process_group,
        refresh_every=refresh_every,
        groups=checked_groups,
        j_dtype=j_dtype,
        batch_tasks=chunk,
        tasks=declared,
        accumulate=accumulate,
        trace=trace_path,
        sharded=sharded,
    )


def _check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...] | None:
    if tasks is None:
        return None
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise ValueError(f"tasks: expected a non-empty list of task names, got {tasks!r}")
    names = []
    for name in tasks:
        if not isinstance(name, str):
            raise TypeError(f"tasks: task names are strings (the keys of the losses dict), got {name!r}")
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: a task is named twice in {names}")
    return tuple(names)


def _check_distributed(method: Method, mode: str, process_group: Any, sharded: bool) -> None:
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if process_group is not None and not ready:
        raise ValueError("process_group: torch.distributed is not initialised (call init_process_group first)")
    if mode == "none" or _world_size(process_group) == 1:
        return
    if sharded and mode != "exact":
        raise ValueError(
            "data_parallel: FSDP2 shards hold parts of every gradient, so per-rank ('local') "
            "surgery is not defined; use data_parallel='exact'"
        )
    if mode == "exact" and isinstance(method, DoubleBackwardMethod):
        # (Under FSDP2 as under DDP: the cosines of global gradients need them all, differentiably.)
        raise ValueError(
            f"data_parallel: {method.name} differentiates through the task gradients, which would "
            "need a differentiable all-reduce of every gradient; use data_parallel='local' "
            "(each rank's own regulariser, gradients averaged) or one process"
        )


def _check_shared(shared: Iterable[Tensor], candidates: set[int]) -> list[Tensor]:
    if isinstance(shared, Tensor):
        shared = [shared]
    params, seen = [], set()
    for i, p in enumerate(shared):
        if not isinstance(p, Tensor):
            raise TypeError(f"shared: item {i} is a {type(p).__name__}, not a tensor")
        if not p.requires_grad:
            raise ValueError(f"shared: parameter {i} (shape {tuple(p.shape)}) does not require grad")
        if id(p) not in candidates:
            raise ValueError(
                f"shared: parameter {i} (shape {tuple(p.shape)}) is not in the wrapped optimizer's "
                "param_groups (or, for gradsurg.backward, in params)"
            )
        if id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    if not params:
        raise ValueError("shared: no parameters given")
    check_floating(params)
    return params


def _check_groups(
    groups: Any, method: Method, refresh_every: int, candidates: set[int]
) -> Literal["parameter"] | list[list[Tensor]] | None:
    if groups is None:
        return None
    if not isinstance(method, GramMethod):
        raise ValueError(f"groups: {method.name} is not a Gram method; grouped surgery weighs one Gram per group")
    if refresh_every > 1:
        raise ValueError("groups: refresh_every > 1 reuses one weight vector; it does not combine with groups=")
    if groups == "parameter":
        return "parameter"
    if isinstance(groups, (str, Tensor)) or not isinstance(groups, Sequence):
        raise ValueError(f"groups: expected 'parameter' or a list of parameter lists, got {groups!r}")
    out, seen = [], set()
    for g, group in enumerate(groups):
        params = [group] if isinstance(group, Tensor) else list(group)
        if not params:
            raise ValueError(f"groups: group {g} is empty")
        for p in params:
            if not isinstance(p, Tensor) or id(p) not in candidates:
                raise ValueError(f"groups: group {g} holds something that is not one of the parameters")
            if id(p) in seen:
                raise ValueError(f"groups: a parameter of group {g} is in an earlier group too")
            seen.add(id(p))
        out.append(params)
    return out


def check_backward(
    options: Options, *, sync: object, features: object, retain_graph: object, pending: bool = False
) -> None:
    """Check the arguments of one ``backward`` call against the options and the method's kind.

    ``pending``: whether micro-batches accumulated with ``sync=False`` wait for this call.

    Raises:
        TypeError, ValueError: the message starts with the name of the argument to change
            (``sync``, ``features``, ``retain_graph``). Nothing has been computed or changed.
    """
    if not isinstance(sync, bool):
        raise TypeError(f"sync: expected True or False, got {sync!r}")
    if not isinstance(retain_graph, bool):
        raise TypeError(f"retain_graph: expected True or False, got {retain_graph!r}")
    method, name = options.method, options.method.name
    if not sync and isinstance(method, (LossWeighting, DoubleBackwardMethod)):
        raise ValueError(
            f"sync: {name} weighs the losses of the whole batch before any gradient exists, "
            "so micro-batches cannot be accumulated with sync=False; sum the micro-batch "
            "losses into one backward(losses) call, or use a gradient-based method"
        )
    if features is None:
        return
    if not isinstance(features, Tensor) or not features.requires_grad:
        raise ValueError("features: expected the shared representation h, a tensor that requires grad")
    if not isinstance(method, GramMethod):
        raise ValueError(f"features: {name} is not a Gram method; representation-level surgery weighs a Gram matrix")
    if not sync:
        raise ValueError("sync: representation-level surgery (features=) does not accumulate micro-batches")
    if pending:
        raise ValueError(
            "features: micro-batches accumulated with sync=False wait for a syncing call, and "
            "representation-level surgery does not accumulate; sync them without features= first "
            "(or zero_grad() to drop them)"
        )
    # Each option below changes how the per-task gradients of the shared *parameters* are
    # taken, stored or reused; representation-level surgery takes none of them.
    unsupported = [
        ("groups", options.groups is not None, "one Gram per group of shared parameters"),
        ("j_dtype", options.j_dtype is not None, "J of the shared parameters in another dtype"),
        ("batch_tasks", options.batch_tasks > 1, "the per-task backward passes of the shared parameters batched"),
        ("refresh_every", options.refresh_every > 1, "weights cached between refreshes"),
    ]
    for option, given, what in unsupported:
        if given:
            raise ValueError(
                f"features: representation-level surgery does not combine with {option}= ({what}); "
                f"drop {option}= or call backward without features="
            )
    if options.sharded or (options.data_parallel != "none" and _world_size(options.process_group) > 1):
        raise ValueError("features: representation-level surgery runs in one process (no DDP/FSDP2 yet)")
