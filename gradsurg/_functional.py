"""The functional API: one surgery step into ``.grad`` (:func:`backward`), and the Gram matrix
and aggregation of given gradients (:func:`gramian`, :func:`aggregate`)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._engine import Engine
from ._options import DataParallelMode, Groups, NonFinitePolicy, Reduction, make_options
from ._stats import SurgeryStats
from ._trace import read_trace
from .kernels import get_backend
from .methods import GramMethod, MatrixMethod, Method, resolve_method

__all__ = ["aggregate", "backward", "gramian"]


def backward(
    losses: Sequence[Tensor] | Mapping[str, Tensor],
    params: Iterable[Tensor],
    /,
    *,
    method: str | Method = "pcgrad",
    shared: Iterable[Tensor] | None = None,
    task_weights: Sequence[float] | Mapping[str, float] | None = None,
    reduction: Reduction = "sum",
    backend: str = "auto",
    nonfinite: NonFinitePolicy = "raise",
    scaler: Any = None,
    data_parallel: DataParallelMode = "exact",
    process_group: Any = None,
    groups: Groups | None = None,
    j_dtype: torch.dtype | None = None,
    batch_tasks: bool | int = False,
    tasks: Sequence[str] | None = None,
    trace: str | os.PathLike | None = None,
    features: Tensor | None = None,
    retain_graph: bool = False,
) -> SurgeryStats:
    """One surgery step without an optimizer: the conflict-aware gradient of ``losses`` into the
    ``.grad`` of ``params`` (accumulating, like ``Tensor.backward``).

    For loops that own their optimizer step (TorchJD's ``mtl_backward`` + ``jac_to_grad`` is the
    same idea)::

        stats = gradsurg.backward({"cls": loss_cls, "sum": loss_sum}, model.parameters(), method="upgrad")
        opt.step()

    It is the step :meth:`GradSurgery.backward` runs (the same engine), minus what an optimizer
    keeps between steps: each call is a whole step (no ``sync=False`` accumulation, no
    ``refresh_every``), and a method given by name starts with a fresh state. A stateful
    method (GradVac's targets, Nash-MTL's warm start, uncertainty weighting's learnable
    log-variances, …) must therefore be passed as an instance that the caller keeps, e.g.
    ``method=gradsurg.build_method("gradvac")``; learnable method parameters are the caller's to
    optimise (``method.parameters()``; those created lazily get their ``.grad`` too).

    Args:
        losses: T scalar losses, a list/tuple or a dict ``name → loss``.
        params: the candidate parameters (e.g. ``model.parameters()``): those reached by two or
            more losses are shared (unless ``shared=`` fixes them), the others get their
            ordinary gradient; leaf tensors outside ``params`` that a loss reaches get their
            ordinary gradient too.
        method: a name or a :class:`Method` (a stateful one as an instance you keep).
        shared: as for :class:`GradSurgery`, like ``task_weights``, ``reduction``, ``backend``,
            ``nonfinite``, ``scaler``, ``data_parallel``, ``process_group``, ``groups``,
            ``j_dtype``, ``batch_tasks``, ``tasks`` and ``trace`` (a trace's steps are numbered
            across the calls of this process).
        features: as for :meth:`GradSurgery.backward`, like ``retain_graph``.

    Returns:
        The step's :class:`SurgeryStats`. A skipped non-finite step (``nonfinite="skip"``) has
        written nothing; ``stats.skipped`` says so, and the caller must not step.

    Raises:
        TypeError, ValueError: bad arguments (the message starts with the argument's name),
            bad ``losses``; FloatingPointError: a non-finite step with ``nonfinite="raise"``.
            Nothing has been changed then.
    """
    if isinstance(params, Tensor):
        params = [params]
    if not isinstance(params, Iterable):
        raise TypeError(f"params: expected an iterable of tensors (e.g. model.parameters()), got {type(params).__name__}")
    candidates, seen = [], set()
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params: item {i} is a {type(p).__name__}, not a tensor")
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            candidates.append(p)
    if not candidates:
        raise ValueError("params: no parameter that requires grad")
    if isinstance(method, str):
        resolved = resolve_method(method)
        if resolved.stateful or any(True for _ in resolved.parameters()):
            raise ValueError(
                f"method: {method!r} keeps state between steps, which a method given by name "
                f"would lose at every call; build it once (gradsurg.build_method({method!r}, ...)) "
                "and pass the instance"
            )
        method = resolved
    options = make_options(
        method,
        candidates,
        shared=shared,
        task_weights=task_weights,
        reduction=reduction,
        backend=backend,
        nonfinite=nonfinite,
        scaler=scaler,
        data_parallel=data_parallel,
        process_group=process_group,
        groups=groups,
        j_dtype=j_dtype,
        batch_tasks=batch_tasks,
        tasks=tasks,
        trace=trace,
    )
    if groups is not None and options.method.stateful:
        raise ValueError(
            f"groups: {options.method.name} is stateful and grouped surgery keeps one copy of its "
            "state per group, which only an optimizer keeps between steps; use "
            "GradSurgery(..., groups=...)"
        )
    engine = Engine(options)
    if options.trace is not None:
        key = str(options.trace.resolve())
        if key not in _TRACE_STEPS:
            _TRACE_STEPS[key] = len(read_trace(options.trace)) if options.trace.exists() else 0
        engine.applied_steps = _TRACE_STEPS[key]
    if options.method.stateful:
        # Per-task state follows the task names across calls, as in GradSurgery.
        engine.task_names = _TASK_NAMES.get(options.method)
    stats = engine.backward(losses, candidates, retain_graph=retain_graph, features=features)
    assert stats is not None  # sync=True: a whole step
    if options.method.stateful and engine.task_names is not None:
        _TASK_NAMES[options.method] = engine.task_names
    if options.trace is not None:
        _TRACE_STEPS[str(options.trace.resolve())] = engine.applied_steps
        if engine.trace is not None:
            engine.trace.close()
    return stats


# The steps a trace file holds, per file (the next call's step is the next number).
_TRACE_STEPS: dict[str, int] = {}

# The task names of a stateful method instance's last step (its state is in that order).
_TASK_NAMES: weakref.WeakKeyDictionary[Method, tuple[str, ...]] = weakref.WeakKeyDictionary()

Grads = Tensor | Sequence[Sequence[Tensor]]


def _as_lists(grads: Grads) -> tuple[Tensor | None, list[list[Tensor]] | None]:
    if isinstance(grads, Tensor):
        if grads.dim() < 1 or grads.shape[0] == 0:
            raise ValueError(f"grads: expected a (T, ...) tensor with T ≥ 1, got shape {tuple(grads.shape)}")
        if not grads.dtype.is_floating_point:
            raise ValueError(f"grads: expected a floating-point tensor, got {grads.dtype}")
        return grads.reshape(grads.shape[0], -1), None
    if (
        isinstance(grads, Sequence)
        and grads
        and all(isinstance(row, Sequence) and all(isinstance(g, Tensor) for g in row) for row in grads)
    ):
        lists = [list(row) for row in grads]
        shapes = [tuple(g.shape) for g in lists[0]]
        if not shapes:
            raise ValueError("grads: task 0 has no gradients")
        for t, row in enumerate(lists):
            if [tuple(g.shape) for g in row] != shapes:
                raise ValueError(f"grads: task {t}'s gradient shapes differ from task 0's")
        return None, lists
    raise TypeError("grads: expected a (T, P) tensor or a list of per-task lists of per-parameter gradients")


def gramian(grads: Grads, /, *, backend: str = "auto") -> Tensor:
    """The Gram matrix G_ij = ⟨g_i, g_j⟩ of T task gradients, accumulated in float64.

    Args:
        grads: a ``(T, P)`` (or ``(T, ...)``) tensor of flattened task gradients, or
            ``grads[t][k]``, task ``t``'s gradient of parameter ``k`` (then J is never built).
        backend: kernel backend (see :class:`GradSurgery`).

    Returns:
        float64 ``(T, T)`` tensor on the gradients' device.
    """
    matrix, lists = _as_lists(grads)
    if matrix is not None:
        return get_backend(backend, matrix.device).gram(matrix)
    assert lists is not None
    return get_backend(backend, lists[0][0].device).gram_lists(lists)


def aggregate(grads: Grads, method: str | Method, /, *, backend: str = "auto") -> Tensor | list[Tensor]:
    """Combine T task gradients with a method: ``Σ_t w_t g_t`` with ``w = method.weights(G)``.

    Args:
        grads: as in :func:`gramian`.
        method: a method name or instance (a stateful instance advances its state).
        backend: kernel backend.

    Returns:
        For a tensor input, the combined gradient of shape ``grads.shape[1:]``; for lists, one
        combined tensor per parameter.

    >>> import torch, gradsurg
    >>> gradsurg.aggregate(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), "pcgrad")
    tensor([0.5000, 1.5000])
    """
    method = resolve_method(method)
    if not isinstance(method, (GramMethod, MatrixMethod)):
        raise ValueError(
            f"method: {method.name!r} weighs the losses, not given gradients "
            f"({type(method).__name__} is a loss-space or double-backward method); use it through GradSurgery"
        )
    matrix, lists = _as_lists(grads)
    if isinstance(method, MatrixMethod):
        if matrix is None:
            assert lists is not None
            matrix = torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in lists])
        out = torch.empty(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
        method.combine_into(out, matrix)
    else:
        weights = method.weights(gramian(grads, backend=backend))
        if matrix is None:
            assert lists is not None
            w = weights.tolist()
            return [sum(w_t * row[k] for w_t, row in zip(w, lists)) for k in range(len(lists[0]))]  # type: ignore[misc]
        out = torch.empty(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
        get_backend(backend, matrix.device).combine_into(out, matrix, weights)
    if lists is None:
        assert isinstance(grads, Tensor)
        return out.view(grads.shape[1:])
    return [part.view_as(g) for part, g in zip(out.split([g.numel() for g in lists[0]]), lists[0])]
