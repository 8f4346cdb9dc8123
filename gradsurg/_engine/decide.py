"""The non-finite decision: raise, or skip the step with nothing changed."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["all_finite", "nonfinite_tasks"]


def nonfinite_tasks(names: list[str], finite: Tensor, policy: str) -> tuple[str, ...]:
    """The names of the non-finite tasks (empty if all are finite).

    Raises:
        FloatingPointError: some task is non-finite and ``policy`` is ``"raise"`` (else ``"skip"``); the message
            names the tasks and says that nothing was changed.
    """
    bad = tuple(n for n, ok in zip(names, finite.tolist()) if not ok)
    if bad and policy == "raise":
        raise FloatingPointError(
            f"losses: non-finite gradients for task(s) {list(bad)} (a loss or its gradient has "
            "NaN or inf); nothing was changed (pass nonfinite='skip' to skip such steps)"
        )
    return bad


def all_finite(tensors: Iterable[Tensor]) -> Tensor:
    """A 0-d bool tensor (on the tensors' device, no host synchronisation): whether every
    element of every tensor is finite.

    One ``aminmax`` reduction per tensor: NaN propagates to both ends and ±inf shows at one of
    them, so the extremes are finite exactly when every element is. It reads each tensor once
    and allocates nothing P-sized (``isfinite(g).all()`` writes a boolean copy first: about 6×
    the time on a 5 M-parameter model, measured on two CPU cores).
    """
    ends = [end for t in tensors if t.numel() for end in torch.aminmax(t)]
    if not ends:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([e.to(ends[0].device) for e in ends]).isfinite().all()
