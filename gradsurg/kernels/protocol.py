"""What a kernel backend is: a name and the four passes over J of a surgery step.

Every backend (``gradsurg.kernels.reference`` = ``"torch"``, ``cpp``, ``triton``, ``cuda``) is a
module that satisfies :class:`Backend` structurally (PEP 544 lets modules implement protocols),
with the semantics of :mod:`gradsurg.kernels.reference`, the oracle every backend is tested
against (``tests/kernels/test_conformance.py``). :func:`gradsurg.kernels.get_backend` returns one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A kernel backend: ``name`` and the ops ``flatten_into``, ``gram``, ``gram_lists``,
    ``combine_into``, all with the semantics of :mod:`gradsurg.kernels.reference`."""

    #: The name ``GradSurgery(backend=...)`` accepts for it, lower-case (``"cpp"``); reported as
    #: ``stats.backend``.
    name: str

    def flatten_into(self, dst: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
        """Copy one task's gradients (any strides) into its row views of J; ``None`` writes zeros."""
        ...

    def gram(self, matrix: Tensor) -> Tensor:
        """G = J·Jᵀ, float64 ``(T, T)`` on J's device, for J ``(T, P)`` of any floating dtype.

        Accurate to about one float32 rounding per column block relative to √(G_ii·G_jj) over
        the whole finite range of J's dtype (subnormals included), like the float64 reference.
        """
        ...

    def gram_lists(self, grads: Sequence[Sequence[Tensor]]) -> Tensor:
        """G from ``grads[t][k]`` (task t's gradient of parameter k) without building J."""
        ...

    def combine_into(self, out: Tensor, matrix: Tensor, weights: Tensor, *, beta: float = 0.0) -> None:
        """``out ← beta·out + wᵀ·J`` in place; ``beta=0`` never reads ``out``."""
        ...
