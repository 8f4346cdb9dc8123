"""The path of each method kind through the stages of a step.

A path is chosen once per :class:`~gradsurg.GradSurgery` (:func:`path_for`) from the method's
kind, so the step never switches on a string. Adding a kind adds a method base class in
:mod:`gradsurg.methods.base`, a path class here, and one entry in ``_PATHS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from ..methods.base import DoubleBackwardMethod, GramMethod, LossWeighting, MatrixMethod, Method
from ..stats import SurgeryStats, make_stats
from .capture import capture_task_gradients, check_dense
from .gram import HostView, gram_of, to_host
from .nonfinite import nonfinite_tasks
from .plan import StepPlan
from .write import write_shared, write_specific

if TYPE_CHECKING:
    from ..buffer import GradBuffer
    from ..kernels.protocol import Backend
    from ..optim import GradSurgery

__all__ = ["DoubleBackwardPath", "GramPath", "LossPath", "MatrixPath", "StepPath", "path_for"]


def _backend_name(kernels: Backend) -> str:
    return getattr(kernels, "name", None) or kernels.NAME  # type: ignore[attr-defined]


class StepPath(Protocol):
    """How one kind of method runs a step; returns the step's stats.

    On any exception nothing visible has been changed (``.grad``, parameters, the wrapped
    optimizer); the caller restores the method's state.
    """

    def run(self, plan: StepPlan, surgery: GradSurgery) -> SurgeryStats: ...


class _PerTaskGradientPath:
    """capture → reduce → gram → decide → weights/combine → write → stats, for the methods
    that work on the per-task gradients of the shared parameters."""

    def run(self, plan: StepPlan, surgery: GradSurgery) -> SurgeryStats:
        buffer = surgery._buffer_for(plan.shared, plan.num_tasks)
        kernels = surgery._kernels_for(plan)
        captured = capture_task_gradients(plan, buffer, kernels)
        surgery._reduce(buffer, captured)
        host = to_host(plan.scalars, gram_of(buffer, kernels), captured.finite_specific)
        name = surgery.method.name
        bad = nonfinite_tasks(plan.names, host.finite, surgery.nonfinite)
        if bad:
            return make_stats(plan.names, host.losses, host.gram, None, method=name, backend=_backend_name(kernels), nonfinite_tasks=bad)
        scale = surgery._scale(plan.num_tasks)
        if buffer is None:
            # No shared parameters (one task, or tasks that share nothing): every gradient is
            # task-specific and applied as it is; the method has nothing to weigh.
            weights: Tensor | None = torch.full((plan.num_tasks,), scale, dtype=torch.float64)
        else:
            weights = self.combine(surgery.method, buffer, kernels, host, scale)
        write_specific(plan.params, captured.specific, scale)
        return make_stats(plan.names, host.losses, host.gram, weights, method=name, backend=_backend_name(kernels))

    def combine(self, method: Method, buffer: GradBuffer, kernels: Backend, host: HostView, scale: float) -> Tensor | None:
        """Write the combination into the shared ``.grad``; return the weights applied (or None)."""
        raise NotImplementedError


class GramPath(_PerTaskGradientPath):
    """Weights from G; ``wᵀ·J`` by the backend's combine kernel."""

    def combine(self, method: Method, buffer: GradBuffer, kernels: Backend, host: HostView, scale: float) -> Tensor:
        assert isinstance(method, GramMethod) and host.gram is not None
        weights = method.weights(host.gram, losses=host.losses) * scale
        write_shared(buffer, lambda beta: kernels.combine_into(buffer.flat, buffer.matrix, weights, beta=beta))
        return weights


class MatrixPath(_PerTaskGradientPath):
    """The method combines J itself (no weights)."""

    def combine(self, method: Method, buffer: GradBuffer, kernels: Backend, host: HostView, scale: float) -> None:
        assert isinstance(method, MatrixMethod)
        write_shared(buffer, lambda beta: _combine_matrix(method, buffer, beta, scale))
        return None


def _combine_matrix(method: MatrixMethod, buffer: GradBuffer, beta: float, scale: float) -> None:
    # The 1/T of reduction="mean" must scale only the method's new combination, not gradients
    # already accumulated in the buffer.
    if scale == 1.0:
        method.combine_into(buffer.flat, buffer.matrix, beta=beta)
    elif beta == 0.0:
        method.combine_into(buffer.flat, buffer.matrix, beta=0.0)
        buffer.flat.mul_(scale)
    else:
        fresh = torch.empty_like(buffer.flat)
        method.combine_into(fresh, buffer.matrix, beta=0.0)
        buffer.flat.add_(fresh, alpha=scale)


class LossPath:
    """One objective from the losses, one backward, ordinary gradients for every parameter it
    reaches (loss-space methods)."""

    def objective(self, method: Method, scaled: Tensor, plan: StepPlan) -> tuple[Tensor, Tensor | None]:
        """The scalar to differentiate and the Gram matrix for the stats (None here)."""
        assert isinstance(method, LossWeighting)
        return method.objective(scaled), None

    def run(self, plan: StepPlan, surgery: GradSurgery) -> SurgeryStats:
        method, name = surgery.method, surgery.method.name
        host = to_host(plan.scalars, None, None)
        # Non-finite losses are decided before the method sees them: loss-space methods keep
        # loss histories and take logarithms, which a NaN would poison.
        bad = nonfinite_tasks(plan.names, host.finite, surgery.nonfinite)
        if bad:
            return make_stats(plan.names, host.losses, None, None, method=name, backend="torch", nonfinite_tasks=bad)
        scaled = torch.stack([loss * alpha for loss, alpha in zip(plan.scalars, plan.alphas)])
        objective, gram = self.objective(method, scaled, plan)
        # Learnable method parameters created lazily (at the first objective) join the wrapped
        # optimizer once this step has succeeded.
        params = plan.params
        known = {id(p): k for k, p in enumerate(params)}
        method_params = [p for p in method.parameters() if p.requires_grad]
        fresh = [p for p in method_params if id(p) not in known]
        positions = sorted(set().union(*plan.reached) | {known[id(p)] for p in method_params if id(p) in known})
        inputs = [params[k] for k in positions] + fresh
        grads = torch.autograd.grad(objective, inputs, retain_graph=plan.retain_graph, allow_unused=True)
        specific: dict[int, Tensor] = {}
        for k, g in zip(positions, grads):
            if g is not None:
                check_dense("objective", k, g)
                specific[k] = g
        fresh_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(fresh, grads[len(positions):])]
        flags = [torch.isfinite(g).all() for g in [*specific.values(), *fresh_grads]]
        if flags and not bool(torch.stack(flags).all()):
            # Name the tasks whose gradient norm is non-finite; if none is, the objective itself
            # overflowed and every task is named.
            finite = torch.isfinite(gram.diagonal()) if gram is not None else torch.ones(plan.num_tasks, dtype=torch.bool)
            if finite.all():
                finite = torch.zeros_like(finite)
            bad = nonfinite_tasks(plan.names, finite, surgery.nonfinite)
            return make_stats(plan.names, host.losses, gram, None, method=name, backend="torch", nonfinite_tasks=bad)
        scale = surgery._scale(plan.num_tasks)
        write_specific(params, specific, scale)
        if fresh:
            surgery.optimizer.add_param_group({"params": fresh})
            for p, g in zip(fresh, fresh_grads):
                p.grad = g * scale
        last = getattr(method, "last_weights", None)
        weights = None if last is None else last * scale
        return make_stats(plan.names, host.losses, gram, weights, method=name, backend="torch")


class DoubleBackwardPath(LossPath):
    """The objective differentiates through the task gradients of the shared parameters."""

    def objective(self, method: Method, scaled: Tensor, plan: StepPlan) -> tuple[Tensor, Tensor | None]:
        assert isinstance(method, DoubleBackwardMethod)
        objective, gram = method.objective(scaled, plan.shared)
        return objective, gram.detach().to(device="cpu", dtype=torch.float64)


_PATHS: dict[type[Method], type] = {
    GramMethod: GramPath,
    MatrixMethod: MatrixPath,
    LossWeighting: LossPath,
    DoubleBackwardMethod: DoubleBackwardPath,
}


def path_for(method: Method | type[Method]) -> StepPath:
    """The path of the kind of ``method`` (an instance or a class): the first kind class in
    its MRO.

    Raises:
        TypeError: ``method`` derives from no known kind.
    """
    cls = method if isinstance(method, type) else type(method)
    for base in cls.__mro__:
        if base in _PATHS:
            return _PATHS[base]()
    kinds = ", ".join(k.__name__ for k in _PATHS)
    raise TypeError(f"method: {cls.__name__} is of no known kind; derive it from one of {kinds}")
