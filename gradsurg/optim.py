"""``GradSurgery``: an optimizer wrapper that turns T task losses into one conflict-aware step."""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .buffer import SharedBuffers, check_floating
from .distributed import DATA_PARALLEL_MODES, DataParallelMode, make_reducer
from .fsdp import Sharding, fsdp_handles
from .kernels import BACKENDS, get_backend
from .losses import check_task_weights_arg
from .methods import GramMethod, MatrixMethod, Method, resolve_method
from .stats import SurgeryStats
from .step import StepPath, path_for, plan_step
from .step.batching import TaskBatching
from .step.capture import Captured
from .step.nonfinite import NONFINITE_POLICIES, NonFinitePolicy
from .step.paths import CachedWeightsPath, GroupedGramPath, RepresentationPath
from .step.plan import StepPlan, trainable_parameters

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

    :meth:`backward` computes each task's gradient of the *shared* parameters into a reused
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
            by two or more losses (read off the autograd graph at every step; a graph that
            hides its parameters — a ``torch.compile``'d region used by several losses through
            different outputs, a reentrant checkpoint — is refused with an error that says how
            to fix it). Several devices or dtypes are fine: one J per (device, dtype) group.
        task_weights: static α_t (a sequence in loss order, or a dict by loss name; default 1):
            J's rows are the gradients of α_t L_t, and task-specific gradients are Σ_t α_t ∇L_t.
        reduction: ``"sum"`` (default) applies the method's weights as they are; ``"mean"``
            divides every weight, and the task-specific gradients, by T.
        backend: kernel backend, ``"auto"`` (default) or one of ``gradsurg.kernels.BACKENDS``;
            the one used is in ``stats.backend``.
        nonfinite: what to do when a task's loss or gradient has NaN or inf: ``"raise"``
            (default) raises ``FloatingPointError`` before anything is changed (parameters,
            ``.grad``, optimizer and method state are left exactly as they were); ``"skip"``
            leaves them as well, reports ``stats.skipped`` and makes the next :meth:`step` a
            no-op. Ignored under an enabled ``scaler``, which decides overflow itself.
        scaler: a ``torch.amp.GradScaler`` whose ``scale()`` the losses passed to
            :meth:`backward` went through. The methods then see the unscaled Gram matrix and
            losses, the update is that of the unscaled computation, and an overflowing step
            writes the plain gradient (infs included) so that ``scaler.step(opt)`` skips it and
            ``scaler.update()`` backs off, as in plain PyTorch.
        data_parallel: under ``torch.distributed``: ``"exact"`` (default) all-reduces the
            per-task gradients (DDP) or the Gram of the local shards (FSDP2), so every rank
            applies the surgery of the global batch; ``"local"`` runs the surgery on each rank's
            own gradients and averages the results (an approximation, one all-reduce); ``"none"``
            does no communication.
        process_group: the process group of ``data_parallel`` (default: the world).
        refresh_every: k > 1 computes the per-task gradients, the Gram matrix and the weights
            every k-th step only; in between, one backward of Σ_t w_t L_t with the cached
            weights (Gram methods; ``stats.refreshed`` says which steps refreshed).
        groups: ``"parameter"`` or a list of parameter lists: an independent Gram matrix,
            weights and combination per group (Gram methods; ``stats.group_weights``).
        j_dtype: storage dtype of J (``torch.bfloat16`` halves the buffer; the Gram is still
            summed in float64). Gram methods only.
        batch_tasks: ``True`` runs the T per-task backward passes as one vmapped autograd call
            (``is_grads_batched``), an int c ≥ 2 in calls of c tasks; ``False`` (default) one
            pass per task. The same gradients in fewer, larger kernels: usually faster on GPUs,
            slower on CPUs (see :mod:`gradsurg.step.batching`). A model that cannot be vmapped
            falls back to one pass per task with a warning; ``stats.tasks_per_backward`` says
            what a step used. Gram and matrix methods, not with FSDP2.

    Parameters that a loss reaches but the wrapped optimizer does not hold (task heads in a
    second optimizer) get their ordinary gradient, as with ``Tensor.backward``.
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
        scaler: torch.amp.GradScaler | None = None,
        data_parallel: DataParallelMode = "exact",
        process_group: Any = None,
        refresh_every: int = 1,
        groups: Literal["parameter"] | Sequence[Iterable[Tensor]] | None = None,
        j_dtype: torch.dtype | None = None,
        batch_tasks: bool | int = False,
    ) -> None:
        # Everything is checked before the wrapped optimizer is touched: a failed construction
        # leaves it exactly as it was.
        if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, GradSurgery):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer to wrap, got {type(optimizer).__name__}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite: expected one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
        if isinstance(task_weights, Tensor):
            task_weights = task_weights.tolist()
        check_task_weights_arg(task_weights)
        if data_parallel not in DATA_PARALLEL_MODES:
            raise ValueError(f"data_parallel: expected one of {DATA_PARALLEL_MODES}, got {data_parallel!r}")
        method_params = list(method.parameters()) if isinstance(method, Method) else []
        sharded = fsdp_handles(trainable_parameters(optimizer.param_groups), method_params) is not None
        reducer = make_reducer(data_parallel, process_group, sharded=sharded)
        if scaler is not None and not all(hasattr(scaler, a) for a in ("scale", "get_scale", "is_enabled", "unscale_")):
            raise TypeError(f"scaler: expected a torch.amp.GradScaler, got {type(scaler).__name__}")
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"refresh_every: expected an int ≥ 1, got {refresh_every!r}")
        if j_dtype is not None and not (isinstance(j_dtype, torch.dtype) and j_dtype.is_floating_point):
            raise ValueError(f"j_dtype: expected a floating torch.dtype (e.g. torch.bfloat16), got {j_dtype!r}")
        if not isinstance(batch_tasks, int) or (not isinstance(batch_tasks, bool) and batch_tasks < 1):
            raise ValueError(f"batch_tasks: expected True, False or a number of tasks per call ≥ 1, got {batch_tasks!r}")
        if batch_tasks is not False and sharded:
            raise ValueError(
                "batch_tasks: the batched backward is not supported on FSDP2-sharded parameters; use batch_tasks=False"
            )
        self.optimizer = optimizer
        self.method = resolve_method(method)
        if j_dtype is not None and not isinstance(self.method, GramMethod):
            raise ValueError(
                f"j_dtype: {self.method.name} works on J itself in the parameters' dtype; use j_dtype=None"
            )
        self.j_dtype = j_dtype
        if refresh_every > 1 and not isinstance(self.method, GramMethod):
            raise ValueError(
                f"refresh_every: {self.method.name} has no task weights to reuse between refreshes "
                "(only Gram methods do: matrix methods combine J itself, loss-space methods already "
                "take one backward)"
            )
        if batch_tasks is not False and not isinstance(self.method, (GramMethod, MatrixMethod)):
            raise ValueError(
                f"batch_tasks: {self.method.name} computes no per-task gradients of the shared parameters "
                "to batch; use batch_tasks=False"
            )
        self.batch_tasks = batch_tasks
        # True: every task in one call (the chunk is capped at T each step).
        self._batching = TaskBatching(1 << 30 if batch_tasks is True else int(batch_tasks))
        self._path = path_for(self.method)
        self.groups = self._check_groups(groups, refresh_every)
        self._group_methods: list[Method] = []
        if self.groups is not None:
            assert isinstance(self.method, GramMethod)
            self._group_methods = [self.method]
            layout = None if self.groups == "parameter" else self.groups
            self._path = GroupedGramPath(layout, self._group_methods, reducer)
        self._shared = None if shared is None else self._check_shared(shared)
        self.reduction = reduction
        self.backend = backend
        self.nonfinite = nonfinite
        self.task_weights = task_weights
        self.scaler = scaler
        self._buffers: SharedBuffers | None = None
        self._pending: _Pending | None = None
        self.refresh_every = refresh_every
        self._since_refresh = 0  # synced steps since the last refresh
        self._cached: tuple[tuple[str, ...], Tensor] | None = None  # (task names, raw weights)
        # (summed losses, micro-batches) of a cached-weights step being accumulated
        self._cached_micro: tuple[Tensor, int] | None = None
        self._task_names: tuple[str, ...] | None = None
        self.data_parallel = data_parallel
        self.process_group = process_group
        self._sharded = sharded
        self._reduce = reducer
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
        # A process group cannot be pickled: the copy reduces over the default group.
        state = self.__dict__.copy()
        state["_buffers"] = None
        state["_pending"] = None
        state["_cached_micro"] = None
        state["_reduce"] = None
        state["process_group"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reduce = make_reducer(self.data_parallel, None, sharded=self._sharded)

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
        """Reset the gradients of the wrapped optimizer's parameters (and discard micro-batches
        accumulated with ``backward(..., sync=False)`` and not yet synced)."""
        self._pending = None
        self._cached_micro = None
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Step the wrapped optimizer, unless the last :meth:`backward` skipped a non-finite step.

        Raises:
            RuntimeError: micro-batches were accumulated with ``sync=False`` and never synced
                (their surgery has not run: stepping would apply a wrong update).
        """
        if self._pending is not None:
            raise RuntimeError(
                f"step: {self._pending.captured.micro_batches} micro-batch(es) were accumulated "
                "with backward(..., sync=False) but never synced; call backward(losses) with "
                "sync=True (the default) on the last micro-batch before step()"
            )
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
        state["gradsurg"] = {
            "method": self.method.state_dict(),
            "group_methods": [m.state_dict() for m in self._group_methods[1:]],
            "skip_next_step": self._skip_next_step,
            "task_names": self._task_names,
            "refresh": {"since": self._since_refresh, "cached": self._cached},
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (a plain optimizer ``state_dict`` also works)."""
        state_dict = dict(state_dict)
        ours = state_dict.pop("gradsurg", None)
        if ours is not None:
            self.method.load_state_dict(ours["method"])
            extra = ours.get("group_methods") or []
            del self._group_methods[1:]
            for group_state in extra:
                group_method = copy.deepcopy(self.method)
                group_method.load_state_dict(group_state)
                self._group_methods.append(group_method)
            self._skip_next_step = bool(ours.get("skip_next_step", False))
            names = ours.get("task_names")
            self._task_names = None if names is None else tuple(names)
            refresh = ours.get("refresh") or {}
            self._since_refresh = int(refresh.get("since", 0))
            cached = refresh.get("cached")
            self._cached = None if cached is None else (tuple(cached[0]), cached[1])
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
                    f"shared: parameter {i} (shape {tuple(p.shape)}) is not in the wrapped optimizer's param_groups"
                )
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if not params:
            raise ValueError("shared: no parameters given")
        check_floating(params)
        return params

    def _parameters(self) -> list[Tensor]:
        return trainable_parameters(self.optimizer.param_groups)

    @property
    def shared_parameters(self) -> list[Tensor]:
        """The shared parameters of the last step (or those given as ``shared=``)."""
        if self._shared is not None:
            return list(self._shared)
        return [] if self._buffers is None else list(self._buffers.params)

    def backward(
        self,
        losses: Sequence[Tensor] | Mapping[str, Tensor],
        *,
        sync: bool = True,
        retain_graph: bool = False,
        features: Tensor | None = None,
    ) -> SurgeryStats | None:
        """Compute the conflict-aware gradient of the task losses into ``.grad``.

        Args:
            losses: T scalar losses, as a list/tuple or a dict ``name → loss`` (a dict's order
                may change between steps: per-task state follows the names).
            sync: ``False`` adds each task's gradient of the shared parameters into J (and holds
                the task-specific gradients) without running the surgery: a micro-batch of an
                accumulated step. The next call with ``sync=True`` (the default) adds its own
                and runs the surgery once, on the summed per-task gradients of all
                micro-batches — the result of one big batch. Nothing is written into ``.grad``
                before that call. (Plain repeated ``backward`` calls instead add up one surgery
                per call, which is not the surgery of the big batch.)
            retain_graph: keep the autograd graph after the last backward pass.
            features: the shared representation h (the output of the last shared layer) for
                representation-level surgery: per-task gradients with respect to h through the
                heads only, the method on their Gram matrix, one backward of the combination
                through the trunk (see :class:`gradsurg.step.paths.RepresentationPath` for when
                it equals parameter-level surgery and when it approximates it).

        Returns:
            A :class:`SurgeryStats` with the Gram matrix, cosines, norms, weights and decisions
            (of the whole accumulated step); None for a ``sync=False`` call.

        Raises:
            TypeError, ValueError: bad ``losses`` (empty, non-scalar, no path to any parameter,
                tasks changed for a method whose state depends on them, a graph that hides its
                parameters), sparse gradients, ``sync=False`` with a loss-space method.
            FloatingPointError: a non-finite loss or task gradient with ``nonfinite="raise"``
                (without a GradScaler, which decides overflow itself).
            In every case nothing has been changed: ``.grad``, parameters, optimizer and method
            state are as before the call.
        """
        previous = self._pending.names if self._pending is not None else self._task_names
        params = self._parameters()
        plan = plan_step(
            losses,
            self.task_weights,
            params,
            self._shared,
            retain_graph=retain_graph,
            previous_names=previous,
            sharding=self._sharding(params),
        )
        self._check_tasks(plan)
        saved = self._save_method_state()
        path = RepresentationPath(features) if features is not None else self._path_for_step(plan)
        try:
            stats = path.run(plan, self, sync=sync)
        except BaseException:
            # Whatever failed, the method's state is as it was (a stateful objective may have
            # advanced it before the failure).
            self._restore_method_state(saved)
            raise
        if stats is None:
            if path is not self._path:
                # A micro-batch of a cached-weights step: its gradients are written; keep its
                # losses for the stats of the whole step.
                values = torch.stack([v.detach().to(torch.float64) for v in plan.scalars])
                if self._cached_micro is not None:
                    values = values + self._cached_micro[0]
                count = 0 if self._cached_micro is None else self._cached_micro[1]
                self._cached_micro = (values, count + 1)
            return None
        if self._cached_micro and path is not self._path:
            total, count = self._cached_micro
            stats = dataclasses.replace(
                stats, losses=stats.losses + total.cpu() * (self._inv_scale() or 1.0), micro_batches=count + 1
            )
        self._cached_micro = None
        if stats.skipped:
            self._restore_method_state(saved)
        else:
            self._task_names = tuple(plan.names)
            stats = self._count_refresh(plan, stats, refreshed=path is self._path)
        # Under a GradScaler the scaler skips overflowing steps itself (it sees the infs).
        self._skip_next_step = stats.skipped and not self.scaler_enabled
        return stats

    def _save_method_state(self) -> list[Any] | None:
        """Copies of the method's state (every group's, with ``groups=``), or None if stateless."""
        if not self.method.stateful:
            return None
        return [copy.deepcopy(m.state_dict()) for m in (self._group_methods or [self.method])]

    def _restore_method_state(self, saved: list[Any] | None) -> None:
        if saved is None:
            return
        if self._group_methods:
            del self._group_methods[len(saved) :]  # groups met first in the failed step
        for m, state in zip(self._group_methods or [self.method], saved):
            m.load_state_dict(state)

    def _check_groups(self, groups: Any, refresh_every: int) -> Literal["parameter"] | list[list[Tensor]] | None:
        if groups is None:
            return None
        if not isinstance(self.method, GramMethod):
            raise ValueError(
                f"groups: {self.method.name} is not a Gram method; grouped surgery weighs one Gram per group"
            )
        if refresh_every > 1:
            raise ValueError("groups: refresh_every > 1 reuses one weight vector; it does not combine with groups=")
        if groups == "parameter":
            return "parameter"
        if isinstance(groups, (str, Tensor)) or not isinstance(groups, Sequence):
            raise ValueError(f"groups: expected 'parameter' or a list of parameter lists, got {groups!r}")
        candidates = {id(p) for p in self._parameters()}
        out, seen = [], set()
        for g, group in enumerate(groups):
            params = [group] if isinstance(group, Tensor) else list(group)
            if not params:
                raise ValueError(f"groups: group {g} is empty")
            for p in params:
                if not isinstance(p, Tensor) or id(p) not in candidates:
                    raise ValueError(f"groups: group {g} holds something that is not a parameter of the optimizer")
                if id(p) in seen:
                    raise ValueError(f"groups: a parameter of group {g} is in an earlier group too")
                seen.add(id(p))
            out.append(params)
        return out

    def _path_for_step(self, plan: StepPlan) -> StepPath:
        """The method's own path at refresh steps, the cached weights' path in between."""
        if self.refresh_every == 1 or self._pending is not None:
            return self._path
        cached = self._cached
        usable = cached is not None and cached[0] == tuple(plan.names)
        if usable and (self._cached_micro or self._since_refresh % self.refresh_every != 0):
            assert cached is not None
            return CachedWeightsPath(cached[1])
        return self._path

    def _count_refresh(self, plan: StepPlan, stats: SurgeryStats, *, refreshed: bool) -> SurgeryStats:
        """After an applied step: cache the weights of a refresh, count the steps since it."""
        if self.refresh_every == 1:
            return stats
        if refreshed:
            self._cached = (tuple(plan.names), stats.weights / self._scale(plan.num_tasks))
            self._since_refresh = 1
        else:
            self._since_refresh += 1
        return dataclasses.replace(stats, refreshed=refreshed)

    def _check_tasks(self, plan: StepPlan) -> None:
        """Refuse a step whose tasks differ from those the method's state or the pending
        accumulation belongs to."""
        names = tuple(plan.names)
        if self._pending is not None and self._pending.names != names:
            raise ValueError(
                f"losses: the micro-batches accumulated with sync=False have tasks "
                f"{list(self._pending.names)}; got {list(names)}"
            )
        self.method.check_num_tasks(plan.num_tasks)
        tied = self.method.tied_to_num_tasks and getattr(self.method, "_num_tasks", None) is not None
        if tied and self._task_names is not None and sorted(self._task_names) != sorted(names):
            raise ValueError(
                f"losses: {type(self.method).__name__} is stateful and its state belongs to the "
                f"tasks {list(self._task_names)}; got {list(names)}. Call method.reset() to start "
                "over with other tasks."
            )

    # -- what the step paths ask of their owner (gradsurg.step.paths) --------------------------

    def _sharding(self, params: list[Tensor]) -> Sharding | None:
        """The FSDP2 shards among ``params`` and their process group (None without FSDP2)."""
        if not self._sharded:
            return None
        handles = fsdp_handles(params, list(self.method.parameters()))
        return None if handles is None else Sharding(handles, self.process_group)

    @property
    def scaler_enabled(self) -> bool:
        """Whether a GradScaler is attached and enabled (it scales the losses it is given)."""
        return self.scaler is not None and bool(self.scaler.is_enabled())

    def _inv_scale(self) -> float | None:
        """1 / the GradScaler's current scale, or None without an enabled one."""
        return 1.0 / float(self.scaler.get_scale()) if self.scaler_enabled else None  # type: ignore[union-attr]

    def _buffers_for(self, plan: StepPlan, pending: _Pending | None) -> SharedBuffers | None:
        """The reused J buffers for this step's shared parameters and T (None without any).

        Raises:
            ValueError: a micro-batch of an accumulated step found other shared parameters.
        """
        shared = plan.shared
        if not shared:
            if pending is not None and pending.key is not None:
                raise ValueError(
                    "losses: this micro-batch reaches no shared parameter, the earlier ones did; pass shared="
                )
            return None
        key = SharedBuffers.make_key(shared, plan.num_tasks, self.j_dtype)
        if pending is not None and pending.key != key:
            raise ValueError(
                "losses: this micro-batch reaches other shared parameters than the earlier ones "
                "accumulated with sync=False; pass shared= to fix the shared set"
            )
        if self._buffers is None or self._buffers.key != key:
            self._buffers = SharedBuffers(shared, plan.num_tasks, self.j_dtype)
        return self._buffers

    def _hold(self, plan: StepPlan, captured: Captured) -> None:
        """Keep a ``sync=False`` micro-batch until the syncing call."""
        key = None if self._buffers is None or not plan.shared else self._buffers.key
        self._pending = _Pending(tuple(plan.names), key, captured)

    def _kernels_for(self, device: torch.device) -> Any:
        """The kernel backend for ``device``."""
        return get_backend(self.backend, device)

    def _scale(self, num_tasks: int) -> float:
        """The factor ``reduction`` applies to every weight."""
        return 1.0 / num_tasks if self.reduction == "mean" else 1.0


@dataclass(frozen=True)
class _Pending:
    """Micro-batches accumulated with ``sync=False``: their tasks, shared-parameter key, and
    what was captured besides J (which holds their summed per-task gradients)."""

    names: tuple[str, ...]
    key: tuple | None
    captured: Captured
