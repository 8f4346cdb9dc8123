"""The method kinds. Each kind is a class that brings its own path through a step.

- :class:`GramMethod` turns the T×T Gram matrix of the task gradients into T weights. Most
  gradient-surgery methods are a function of G = J·Jᵀ alone (plus, for stateful methods, a
  little state of size O(T²)). Keeping methods away from J is what lets the heavy work stay in
  two passes over J done by kernels, and what makes a distributed Gram (an all-reduce of T×T
  numbers) enough for exact surgery on sharded gradients.
- :class:`MatrixMethod` needs J itself (elementwise rules, tracked gradients).
- :class:`LossWeighting` needs no per-task gradients: it turns the losses into one objective.
- :class:`DoubleBackwardMethod` differentiates through the task gradients (``cosreg``).

:class:`GradSurgery` picks the step path from the method's kind once, when it is built
(``gradsurg._engine.paths.path_for``); adding a kind adds a class here and a path there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["DoubleBackwardMethod", "GramMethod", "LossWeighting", "MatrixMethod", "Method"]


class Method(nn.Module):
    """Base class of all gradsurg methods: name, state and task-count bookkeeping.

    A method is one of the kinds below (:class:`GramMethod`, :class:`MatrixMethod`,
    :class:`LossWeighting`, :class:`DoubleBackwardMethod`); the kind decides how a step runs.

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
    #: Whether the method needs the task losses too (e.g. DB-MTL's log-loss scaling).
    needs_losses: ClassVar[bool] = False
    # Claimed properties of the update A(J), default options (tests/methods/test_registry.py
    # checks every claim of every registered method).
    #: Relabelling the tasks (rows of J, and the losses) leaves the update unchanged.
    permutation_invariant: ClassVar[bool] = False
    #: A(sJ) = s·A(J) for every s > 0.
    positively_homogeneous: ClassVar[bool] = False
    #: A(sJ) = A(J) for every s > 0.
    scale_invariant: ClassVar[bool] = False
    #: A(diag(αc₁+βc₂)J) = αA(diag(c₁)J) + βA(diag(c₂)J) for positive c₁, c₂, α, β (TorchJD's).
    linear_under_scaling: ClassVar[bool] = False
    #: J·A(J) ≥ 0: no task is harmed to first order.
    non_conflicting: ClassVar[bool] = False
    #: A(J) = 0 only if some w > 0 has wᵀJ = 0 (J strongly stationary).
    strongly_stationary: ClassVar[bool] = False
    #: Whether micro-batches can be accumulated with ``GradSurgery.backward(..., sync=False)``
    #: (the per-task gradients add up; loss-space methods weigh the whole batch's losses first).
    accumulates: ClassVar[bool] = False
    #: Constructor arguments the caller must supply from the training setup rather than as an
    #: option: ``"num_tasks"`` (learnable per-task parameters) and ``"layer"`` (the parameters
    #: of the last shared layer, GradNorm). :func:`~gradsurg.methods.build_method` passes
    #: exactly these, so training scripts need no per-method branches.
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self._num_tasks: int | None = None

    def check_num_tasks(self, num_tasks: int) -> None:
        """Raise ``ValueError`` if the method's state was built for another number of tasks."""
        if self.tied_to_num_tasks and self._num_tasks is not None and num_tasks != self._num_tasks:
            raise ValueError(
                f"losses: {type(self).__name__} is stateful and was used with "
                f"{self._num_tasks} tasks; got {num_tasks}. Call reset() on the method to start "
                "over with a different number of tasks."
            )

    def after_step(self) -> None:
        """Called by :meth:`GradSurgery.step` after the wrapped optimizer stepped (renormalising
        learnable weights, say); nothing by default."""

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


class GramMethod(Method):
    """A method that maps the Gram matrix ``G`` (float64, shape ``(T, T)``, on the CPU) of the
    task gradients to a weight vector ``w`` (float64, shape ``(T,)``) so that the combined update
    is ``w @ J``.

    Subclasses implement :meth:`_weights`; callers use :meth:`weights`, which checks the input
    and, for stateful methods, that the number of tasks has not changed.
    """

    accumulates = True

    @torch.no_grad()
    def weights(self, gram: Tensor, /, losses: Tensor | None = None) -> Tensor:
        """Return the task weights for the Gram matrix ``gram``.

        Args:
            gram: symmetric positive semi-definite matrix of shape ``(T, T)``; it is converted to
                float64 on the CPU (the methods solve tiny problems where host code is fastest).
            losses: the ``(T,)`` task losses, for methods with ``needs_losses`` (others ignore it).

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
        if not bool(torch.isfinite(gram).all()):
            raise ValueError(
                "gram: has non-finite entries (NaN, or task gradients whose squared norms overflow "
                "float64, beyond ~1e154); no weights are defined"
            )
        self.check_num_tasks(gram.shape[0])
        if self.needs_losses:
            if losses is None or losses.numel() != gram.shape[0]:
                raise ValueError(f"losses: {type(self).__name__} needs the {gram.shape[0]} task losses")
            w = self._weights(gram, losses.detach().to(device="cpu", dtype=torch.float64).reshape(-1))
        else:
            w = self._weights(gram)
        if self.tied_to_num_tasks:
            self._num_tasks = gram.shape[0]
        return w

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class MatrixMethod(Method):
    """A method that needs the per-task gradients themselves, not only their Gram matrix
    (elementwise rules such as GradDrop's sign purity).

    Subclasses implement :meth:`combine_into`; they have no weights and the step reports NaN
    weights.
    """

    accumulates = True

    def combine_into(self, out: Tensor, matrix: Tensor, *, beta: float = 0.0) -> None:
        """Write ``beta·out + aggregate(J)`` into the flat ``out`` (shape ``(P,)``) in place."""
        raise NotImplementedError


class LossWeighting(Method):
    """A loss-space method: it turns the T task losses into one objective, so a step needs one
    ordinary backward instead of T (no per-task gradients, no Gram matrix).

    Subclasses implement :meth:`loss_weights` (the default objective is ``Σ_t w_t L_t`` with
    those weights, treated as constants) or override :meth:`objective` (uncertainty weighting,
    geometric mean, …). Learnable quantities are ``nn.Parameter`` s of the method;
    :class:`~gradsurg.GradSurgery` adds them to the wrapped optimizer as a parameter group.
    :meth:`after_step` runs after each optimizer step (for renormalisations). An overridden
    :meth:`objective` sets ``last_weights`` (the effective ``∂objective/∂L_t``) for the stats.
    """

    #: Weights of the last :meth:`objective`, reported in :class:`~gradsurg.SurgeryStats`.
    last_weights: Tensor | None = None

    def loss_weights(self, losses: Tensor) -> Tensor:
        """``(T,)`` float64 weights from the detached ``(T,)`` losses (advances any state)."""
        raise NotImplementedError

    def objective(self, losses: Tensor) -> Tensor:
        """The scalar to differentiate, from the ``(T,)`` losses (with their graph)."""
        self.check_num_tasks(losses.numel())
        w = self.loss_weights(losses.detach().to(torch.float64))
        if self.tied_to_num_tasks:
            self._num_tasks = losses.numel()
        self.last_weights = w.detach().to(device="cpu", dtype=torch.float64)
        return (w.to(device=losses.device, dtype=losses.dtype) * losses).sum()


class DoubleBackwardMethod(Method):
    """A method whose objective differentiates through the task gradients themselves (a double
    backward), such as the cosine regulariser ``cosreg``.

    Subclasses implement :meth:`objective`, returning the scalar to differentiate and the
    detached Gram matrix for the stats, and set ``last_weights`` (the weights of the losses in
    the objective) for the stats.
    """

    #: Weights of the losses in the last :meth:`objective`, reported in the stats.
    last_weights: Tensor | None = None

    def objective(self, losses: Tensor, shared: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``(objective, G)`` from the ``(T,)`` losses (with their graph) and the shared parameters."""
        raise NotImplementedError
