"""The non-finite decision: raise, or skip the step with nothing changed."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

__all__ = ["NONFINITE_POLICIES", "NonFinitePolicy", "nonfinite_tasks"]

NonFinitePolicy = Literal["raise", "skip"]
#: Accepted values of ``GradSurgery(nonfinite=...)``.
NONFINITE_POLICIES: tuple[str, ...] = ("raise", "skip")


def nonfinite_tasks(names: list[str], finite: Tensor, policy: NonFinitePolicy) -> tuple[str, ...]:
    """The names of the non-finite tasks (empty if all are finite).

    Raises:
        FloatingPointError: some task is non-finite and ``policy`` is ``"raise"``; the message
            names the tasks and says that nothing was changed.
    """
    bad = tuple(n for n, ok in zip(names, finite.tolist()) if not ok)
    if bad and policy == "raise":
        raise FloatingPointError(
            f"losses: non-finite gradients for task(s) {list(bad)} (a loss or its gradient has "
            "NaN or inf); nothing was changed (pass nonfinite='skip' to skip such steps)"
        )
    return bad
