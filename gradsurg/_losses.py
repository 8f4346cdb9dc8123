"""Checking and naming the task losses handed to :meth:`GradSurgery.backward`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from torch import Tensor

__all__ = ["check_task_weights_arg", "normalise_losses", "normalise_task_weights"]


def normalise_losses(losses: Sequence[Tensor] | Mapping[str, Tensor]) -> tuple[list[str], list[Tensor]]:
    """Return ``(names, scalars)`` for a list/tuple or dict of scalar losses.

    Raises:
        TypeError: ``losses`` is not a sequence or mapping of tensors.
        ValueError: no losses, a loss with more than one element, or a loss that does not
            require grad (it has no path to any parameter).
    """
    if isinstance(losses, Tensor):
        raise TypeError(
            "losses: expected a list or dict of scalar losses, got a single tensor; "
            "pass [loss] or {'name': loss}"
        )
    if isinstance(losses, Mapping):
        names = [str(k) for k in losses]
        values = list(losses.values())
    elif isinstance(losses, Sequence):
        names = [str(i) for i in range(len(losses))]
        values = list(losses)
    else:
        raise TypeError(f"losses: expected a list or dict of scalar losses, got {type(losses).__name__}")
    if not values:
        raise ValueError("losses: no losses given; pass at least one task loss")
    scalars = []
    for name, loss in zip(names, values):
        if not isinstance(loss, Tensor):
            raise TypeError(f"losses[{name!r}]: expected a tensor, got {type(loss).__name__}")
        if loss.numel() != 1:
            raise ValueError(
                f"losses[{name!r}]: expected a scalar loss, got shape {tuple(loss.shape)}; "
                "reduce it (e.g. .mean()) first"
            )
        if not loss.requires_grad:
            raise ValueError(
                f"losses[{name!r}]: does not require grad, so it has no path to any parameter"
            )
        if not loss.dtype.is_floating_point:
            raise ValueError(f"losses[{name!r}]: expected a floating-point loss, got {loss.dtype}")
        scalars.append(loss.reshape(()))
    return names, scalars


def normalise_task_weights(
    task_weights: Sequence[float] | Mapping[str, float] | None,
    names: Sequence[str],
    known: Sequence[str] | None = None,
) -> list[float]:
    """The static weight α_t of each task, in the order of ``names`` (all 1 by default).

    ``known``: the task names a dict of weights may name (default ``names``; the declared
    tasks, or all of a window's, when a step holds only some of them).

    Raises:
        ValueError: wrong count, names that match no known task, or non-finite weights.
    """
    if task_weights is None:
        return [1.0] * len(names)
    if isinstance(task_weights, Mapping):
        unknown = set(map(str, task_weights)) - set(names if known is None else known)
        if unknown:
            raise ValueError(
                f"task_weights: no loss named {sorted(unknown)}; the losses are {list(names if known is None else known)}"
            )
        weights = [float(task_weights.get(n, 1.0)) for n in names]
    else:
        weights = [float(a) for a in task_weights]
        if len(weights) != len(names):
            raise ValueError(
                f"task_weights: has {len(weights)} entries but {len(names)} losses were given "
                "(for steps that hold some of the tasks, give task_weights as a dict by task name)"
            )
    for name, a in zip(names, weights):
        if not math.isfinite(a):
            raise ValueError(f"task_weights: the weight of task {name!r} is {a}, not finite")
    return weights


def check_task_weights_arg(task_weights: object) -> None:
    """Early type check of the constructor argument (counts are checked per step)."""
    if task_weights is None:
        return
    if isinstance(task_weights, Tensor):
        task_weights = task_weights.tolist()
    items = task_weights.values() if isinstance(task_weights, Mapping) else task_weights
    try:
        values = [float(a) for a in items]  # type: ignore[union-attr,attr-defined]
    except (TypeError, ValueError):
        raise TypeError(
            "task_weights: expected a sequence of numbers or a dict name -> number"
        ) from None
    bad = [a for a in values if not math.isfinite(a)]
    if bad:
        raise ValueError(f"task_weights: weights must be finite, got {bad}")

