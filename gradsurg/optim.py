"""``GradSurgery``: an optimizer wrapper that turns T task losses into one conflict-aware step."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from .buffer import GradBuffer
from .kernels.dispatch import BACKENDS, get_backend
from .losses import check_task_weights_arg
from .methods import Method, resolve_method
from .stats import SurgeryStats
from .step import path_for, plan_step
from .step.nonfinite import NONFINITE_POLICIES, NonFinitePolicy
from .step.plan import StepPlan, trainable_parameters
from .step.reduce import LocalReduce

__all__ = ["GradSurgery"]


_REDUCTIONS = ("sum", "mean")
Reduction = Literal["sum", "mean"]


class GradSurgery(torch.optim.Optimizer):
    """Wrap any optimizer so that multi-task steps resolve gradient conflicts.

    One step::

        opt = GradSurgery(torch.optim.AdamW(model.parameters(), lr=2e-5), method="pcgrad")
        opt.zero_grad()
        stats = opt.backward({"cls": loss_cls, "sum": loss_sum})
        opt.step()

    :meth:`backward` computes each task's gradient of the *shared* parameters into one reused
    (T, P) buffer J, the Gram matrix G = J·Jᵀ (float64), the method's task weights w from G, and
    writes wᵀ·J into the shared parameters' ``.grad``. Task-specific parameters get their ordinary
    gradient, Σ_t α_t ∇L_t; parameters no loss reaches keep ``.grad`` as it was. Like
    ``Tensor.backward``, gradients *accumulate* into existing ``.grad`` (call ``zero_grad`` first).

    Everything else — ``param_groups``, ``state``, ``step``, ``zero_grad``, ``state_dict`` — is the
    wrapped optimizer's, so LR schedulers, ``clip_grad_norm_`` and checkpointing work unchanged.

    Args:
        optimizer: the optimizer to wrap (its parameters are the candidates).
        method: a name from :func:`gradsurg.available_methods` or a :class:`gradsurg.Method`.
        shared: the shared parameters. By default, those of the optimizer's parameters reached
            by two or more losses (read off the autograd graph at every step). They must share
            one device and dtype (they live in one buffer); split other layouts across several
            ``GradSurgery`` instances.
        task_weights: static α_t (a sequence in loss order, or a dict by loss name; default 1):
            J's rows are the gradients of α_t L_t, and task-specific gradients are Σ_t α_t ∇L_t.
        reduction: ``"sum"`` (default) applies the method's weights as they are; ``"mean"``
            divides every weight, and the task-specific gradients, by T.
        backend: kernel backend, one of ``"auto"`` (default) or ``"torch"``; the one used is in
            ``stats.backend``.
        nonfinite: what to do when a task gradient has NaN or inf: ``"raise"`` (default) raises
            ``FloatingPointError`` before anything is changed (parameters, ``.grad``, optimizer
            and method state are left exactly as they were); ``"skip"`` leaves them as well,
            reports ``stats.skipped`` and makes the next :meth:`step` a no-op.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        method: str | Method = "pcgrad",
        *,
        shared: Iterable[Tensor] | None = None,
        task_weights: Sequence[float] | Mapping[str, float] | None = None,
        reduction: Reduction = "sum",
        backend: str = "auto",
        nonfinite: NonFinitePolicy = "raise",
    ) -> None:
        # Everything is checked before the wrapped optimizer is touched: a failed construction
        # leaves it exactly as it was.
        if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, GradSurgery):
            raise TypeError(
                f"optimizer: expected a torch.optim.Optimizer to wrap, got {type(optimizer).__name__}"
            )
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite: expected one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
        if isinstance(task_weights, Tensor):
            task_weights = task_weights.tolist()
        check_task_weights_arg(task_weights)
        self.optimizer = optimizer
        self.method = resolve_method(method)
        self._path = path_for(self.method)
        self._shared = None if shared is None else self._check_shared(shared)
        self.reduction = reduction
        self.backend = backend
        self.nonfinite = nonfinite
        self.task_weights = task_weights
        self._buffer: GradBuffer | None = None
        self._reduce = LocalReduce()
        self._skip_next_step = False
        own = [p for p in self.method.parameters() if p.requires_grad]
        if own:
            # Learnable method quantities (uncertainty weighting's log-variances, …) are trained
            # by the wrapped optimizer like any parameter.
            present = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [p for p in own if id(p) not in present]
            if missing:
                optimizer.add_param_group({"params": missing})
        # What torch.optim.Optimizer.__init__ sets up for hooks; param_groups, state and
        # defaults are the wrapped optimizer's (see the properties below).
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim.Optimizer pickles only defaults/state/param_groups, which here live in the
        # wrapped optimizer; keep the whole wrapper instead. The J buffer is a cache: dropped.
        state = self.__dict__.copy()
        state["_buffer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- delegation to the wrapped optimizer -------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The wrapped optimizer's parameter groups (the same list object)."""
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The wrapped optimizer's per-parameter state."""
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The wrapped optimizer's defaults."""
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the wrapped optimizer."""
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of the wrapped optimizer's parameters."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Step the wrapped optimizer, unless the last :meth:`backward` skipped a non-finite step."""
        if self._skip_next_step:
            self._skip_next_step = False
            return None
        result = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self.method.after_step()
        return result

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's ``state_dict()`` plus a ``"gradsurg"`` entry with the method's
        state (PCGrad's generator, GradVac's targets, …)."""
        state = self.optimizer.state_dict()
        state["gradsurg"] = {"method": self.method.state_dict(), "skip_next_step": self._skip_next_step}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (a plain optimizer ``state_dict`` also works)."""
        state_dict = dict(state_dict)
        ours = state_dict.pop("gradsurg", None)
        if ours is not None:
            self.method.load_state_dict(ours["method"])
            self._skip_next_step = bool(ours.get("skip_next_step", False))
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return (
            f"GradSurgery(method={self.method.name!r}, reduction={self.reduction!r}, "
            f"backend={self.backend!r}, optimizer={self.optimizer!r})"
        )

    # -- the surgery step ----------------------------------------------------------------------

    def _check_shared(self, shared: Iterable[Tensor]) -> list[Tensor]:
        if isinstance(shared, Tensor):
            shared = [shared]
        params, seen = [], set()
        candidates = {id(p) for p in self._parameters()}
        for i, p in enumerate(shared):
            if not isinstance(p, Tensor):
                raise TypeError(f"shared: item {i} is a {type(p).__name__}, not a tensor")
            if not p.requires_grad:
                raise ValueError(f"shared: parameter {i} (shape {tuple(p.shape)}) does not require grad")
            if id(p) not in candidates:
                raise ValueError(
                    f"shared: parameter {i} (shape {tuple(p.shape)}) is not in the wrapped "
                    "optimizer's param_groups"
                )
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if not params:
            raise ValueError("shared: no parameters given")
        GradBuffer.check_layout(params)
        return params

    def _parameters(self) -> list[Tensor]:
        return trainable_parameters(self.optimizer.param_groups)

    @property
    def shared_parameters(self) -> list[Tensor]:
        """The shared parameters of the last step (or those given as ``shared=``)."""
        if self._shared is not None:
            return list(self._shared)
        return [] if self._buffer is None else list(self._buffer.params)

    def backward(
        self,
        losses: Sequence[Tensor] | Mapping[str, Tensor],
        *,
        retain_graph: bool = False,
    ) -> SurgeryStats:
        """Compute the conflict-aware gradient of the task losses into ``.grad``.

        Args:
            losses: T scalar losses, as a list/tuple or a dict ``name → loss``.
            retain_graph: keep the autograd graph after the last backward pass.

        Returns:
            A :class:`SurgeryStats` with the Gram matrix, cosines, norms, weights and decisions.

        Raises:
            TypeError, ValueError: bad ``losses`` (empty, non-scalar, no path to any parameter,
                task count changed for a method whose state depends on it), sparse gradients.
            FloatingPointError: a non-finite loss or task gradient with ``nonfinite="raise"``.
            In every case nothing has been changed: ``.grad``, parameters, optimizer and method
            state are as before the call.
        """
        plan = plan_step(losses, self.task_weights, self._parameters(), self._shared, retain_graph=retain_graph)
        self.method.check_num_tasks(plan.num_tasks)
        saved = copy.deepcopy(self.method.state_dict()) if self.method.stateful else None
        try:
            stats = self._path.run(plan, self)
        except BaseException:
            # Whatever failed, the method's state is as it was (a stateful objective may have
            # advanced it before the failure).
            if saved is not None:
                self.method.load_state_dict(saved)
            raise
        if stats.skipped and saved is not None:
            self.method.load_state_dict(saved)
        self._skip_next_step = stats.skipped
        return stats

    # -- what the step paths ask of their owner (gradsurg.step.paths) --------------------------

    def _buffer_for(self, shared: list[Tensor], num_tasks: int) -> GradBuffer | None:
        """The reused J buffer for these shared parameters and T (None without any)."""
        if not shared:
            return None
        if self._buffer is None or self._buffer.key != GradBuffer.make_key(shared, num_tasks):
            self._buffer = GradBuffer(shared, num_tasks)
        return self._buffer

    def _kernels_for(self, plan: StepPlan) -> Any:
        """The kernel backend for the device of the shared parameters."""
        params = plan.shared or plan.params
        return get_backend(self.backend, params[0].device)

    def _scale(self, num_tasks: int) -> float:
        """The factor ``reduction`` applies to every weight."""
        return 1.0 / num_tasks if self.reduction == "mean" else 1.0
