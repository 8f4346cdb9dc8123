"""The method protocol: a method turns the T×T Gram matrix of the task gradients into T weights.

Every gradient-surgery method that gradsurg ships is a function of G = J·Jᵀ alone (plus, for
stateful methods, a little state of size O(T²)). Keeping methods away from J is what lets the
heavy work stay in two passes over J done by kernels, and what makes a distributed Gram (an
all-reduce of T×T numbers) enough for exact surgery on sharded gradients.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["Method"]


class Method(nn.Module):
    """Base class of all gradsurg methods.

    A method maps the Gram matrix ``G`` (float64, shape ``(T, T)``, on the CPU) of the task
    gradients to a weight vector ``w`` (float64, shape ``(T,)``) so that the combined update is
    ``w @ J``. Subclasses implement :meth:`_weights`; callers use :meth:`weights`, which checks
    the input and, for stateful methods, that the number of tasks has not changed.

    Stateful methods (``stateful = True``) keep their state in :meth:`get_extra_state`, so
    ``state_dict()`` / ``load_state_dict()`` checkpoint it, and :meth:`reset` clears it.
    """

    #: Registry name of the method (``"pcgrad"``, ...).
    name: ClassVar[str] = ""
    #: Whether the method keeps state across steps (random generator, EMA, ...).
    stateful: ClassVar[bool] = False
    #: Whether that state is shaped by the number of tasks (GradVac's T×T targets), so the
    #: task count may not change between steps without :meth:`reset`.
    tied_to_num_tasks: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._num_tasks: int | None = None

    @torch.no_grad()
    def weights(self, gram: Tensor, /) -> Tensor:
        """Return the task weights for the Gram matrix ``gram``.

        Args:
            gram: symmetric positive semi-definite matrix of shape ``(T, T)``; it is converted to
                float64 on the CPU (the methods solve tiny problems where host code is fastest).

        Returns:
            A float64 CPU tensor of shape ``(T,)``.

        Raises:
            ValueError: if ``gram`` is not a square matrix, or (stateful methods) its size differs
                from the number of tasks the state was built for.
        """
        if not isinstance(gram, Tensor) or gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
            shape = tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__
            raise ValueError(f"gram: expected a square (T, T) tensor, got {shape}")
        if gram.shape[0] == 0:
            raise ValueError("gram: expected at least one task, got a (0, 0) matrix")
        gram = gram.detach().to(device="cpu", dtype=torch.float64)
        self.check_num_tasks(gram.shape[0])
        w = self._weights(gram)
        if self.tied_to_num_tasks:
            self._num_tasks = gram.shape[0]
        return w

    def check_num_tasks(self, num_tasks: int) -> None:
        """Raise ``ValueError`` if the method's state was built for another number of tasks."""
        if self.tied_to_num_tasks and self._num_tasks is not None and num_tasks != self._num_tasks:
            raise ValueError(
                f"losses: {type(self).__name__} is stateful and was used with "
                f"{self._num_tasks} tasks; got {num_tasks}. Call reset() on the method to start "
                "over with a different number of tasks."
            )

    def _weights(self, gram: Tensor) -> Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (stateless methods: nothing to do)."""
        self._num_tasks = None

    def get_extra_state(self) -> dict[str, Any]:
        """State saved by ``state_dict()``: the number of tasks the state belongs to."""
        return {"num_tasks": self._num_tasks}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._num_tasks = state.get("num_tasks")

    def extra_repr(self) -> str:
        return ""
