"""The engine: one object that owns a run's step state and runs the stages of each step.

The state is what lives between ``backward`` calls: the accumulation window (``sync=False``
micro-batches), the refresh schedule and its cached weights, the per-group copies of the
method (``groups=``), the reused J buffers, the task names of the last applied step. The
optimizer (:class:`~gradsurg.GradSurgery`) and the functional :func:`gradsurg.backward` both
call :meth:`Engine.backward`; neither runs a stage itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from .._dtensor import Sharding, fsdp_handles
from .._losses import normalise_task_weights
from .._options import Options, check_backward
from .._stats import SurgeryStats
from .._trace import TraceWriter
from ..methods.base import Method
from .accumulate import AccumulationWindow
from .batching import TaskBatching
from .context import BufferCache, StepContext
from .groups import GroupedGramPath
from .paths import StepPath, path_for
from .per_task import PerTaskGradientPath
from .plan import StepPlan, plan_step
from .reduce import LocalReduce, make_reducer
from .refresh import RefreshSchedule
from .representation import RepresentationPath

__all__ = ["Engine"]


def _writes_trace() -> bool:
    """Whether this process writes the trace: the only one, or rank 0 (in exact mode every rank
    has the same step)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class Engine:
    """Runs surgery steps with validated ``options`` (:func:`gradsurg._options.make_options`)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.method = options.method
        self.reducer: LocalReduce = make_reducer(options.data_parallel, options.process_group, sharded=options.sharded)
        self.window = AccumulationWindow()
        self.buffers = BufferCache(options.j_dtype)
        self.refresh = RefreshSchedule(options.refresh_every)
        self.batching = TaskBatching(options.batch_tasks)
        self.task_names: tuple[str, ...] | None = None  # of the last applied step
        self.applied_steps = 0  # steps applied so far (the trace numbers them)
        self.trace = None if options.trace is None or not _writes_trace() else TraceWriter(options.trace)
        # With groups=, each group's own copy of the method (the first is the method itself).
        self.group_methods: list[Method] = []
        self.path: StepPath = path_for(self.method)
        if options.groups is not None:
            self.group_methods = [self.method]
            layout = None if options.groups == "parameter" else options.groups
            self.path = GroupedGramPath(layout, self.group_methods)

    # -- pickling: J and the window are caches of a step; a process group cannot be pickled ---

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["options"] = self.options.without_process_group()
        state["buffers"] = BufferCache(self.options.j_dtype)
        state["window"] = AccumulationWindow()
        state["reducer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        options = self.options
        self.reducer = make_reducer(options.data_parallel, None, sharded=options.sharded)

    # -- one step ---------------------------------------------------------------------------

    def backward(
        self,
        losses: Sequence[Tensor] | Mapping[str, Tensor],
        params: list[Tensor],
        *,
        sync: bool = True,
        retain_graph: bool = False,
        features: Tensor | None = None,
        add_parameters: Callable[[Sequence[Tensor]], None] | None = None,
    ) -> SurgeryStats | None:
        """One ``backward`` call: plan → (per the method's kind) capture → accumulate → reduce →
        gram → decide → weights → write → stats.

        ``params`` are the candidate parameters (the optimizer's trainable ones);
        ``add_parameters`` receives learnable method parameters created in this step. See
        :meth:`gradsurg.GradSurgery.backward` for the arguments, the result and the errors; on
        any error nothing has changed (``.grad``, parameters, method state, this engine's
        state except a discarded accumulation window, which the error's note says).
        """
        check_backward(
            self.options, sync=sync, features=features, retain_graph=retain_graph, pending=self.window.pending
        )
        declared = self.options.tasks
        weights = self.options.task_weights
        if declared is not None:
            known: list[str] | None = list(declared)
        elif sync and not self.window.open:
            known = None  # a whole step: its losses are all the tasks
        else:
            # A micro-batch holds some of the window's tasks: the syncing call checks the union.
            known = [str(k) for k in weights] if isinstance(weights, Mapping) else None
        plan = plan_step(
            losses,
            self.options.task_weights,
            params,
            self.options.shared,
            retain_graph=retain_graph,
            previous_names=declared or self.task_names,
            sharding=self._sharding(params),
            known_names=known,
        )
        if declared is not None:
            unknown = [n for n in plan.names if n not in declared]
            if unknown:
                raise ValueError(f"losses: task(s) {unknown} are not among the declared tasks {list(declared)}")
        self.window.check(plan)
        cached = None if features is not None else self.refresh.cached_path(plan, self.window)
        path: StepPath = RepresentationPath(features) if features is not None else cached or self.path
        window_names = self._window_names(plan, path, sync)
        if window_names is not None:
            if declared is None:
                normalise_task_weights(weights, list(window_names))  # names no task of the window?
            self._check_tasks(window_names)
        elif sync:
            self._check_tasks(tuple(plan.names))
        ctx = StepContext(
            self.options, self.reducer, self.window, self.buffers, self.batching, add_parameters, window_names
        )
        saved = self._save_method_state()
        try:
            stats = path.run(plan, ctx, sync=sync)
        except BaseException:
            # Whatever failed, the method's state is as it was (a stateful objective may have
            # advanced it before the failure).
            self._restore_method_state(saved)
            raise
        if stats is None:
            if cached is not None:
                self.window.add_cached(plan)  # its gradients are written; keep its losses
            return None
        if cached is not None:
            stats = self.window.close_cached(stats, self.options.inv_scale())
        if stats.skipped:
            self._restore_method_state(saved)
            return stats
        self.task_names = stats.task_names
        self.applied_steps += 1
        stats = self.refresh.count(plan, stats, refreshed=cached is None, scale=self.options.scale(plan.num_tasks))
        if self.trace is not None:
            self.trace.record(self.applied_steps, stats, stats.group_grams, self.options.reduction)
        return stats

    def discard_window(self) -> None:
        """Drop the micro-batches accumulated with ``sync=False`` (``zero_grad``)."""
        self.window.discard()

    def after_step(self) -> None:
        """The caller's optimizer stepped: methods that count steps advance."""
        self.method.after_step()

    @property
    def shared_parameters(self) -> list[Tensor]:
        """The shared parameters of the last step (or those fixed by ``shared=``)."""
        if self.options.shared is not None:
            return list(self.options.shared)
        current = self.buffers.current
        return [] if current is None else list(current.params)

    # -- checks and method state ------------------------------------------------------------

    def _sharding(self, params: list[Tensor]) -> Sharding | None:
        """The FSDP2 shards among ``params`` and their process group (None without FSDP2)."""
        if not self.options.sharded:
            return None
        handles = fsdp_handles(params, list(self.method.parameters()))
        return None if handles is None else Sharding(handles, self.options.process_group)

    def _window_names(self, plan: StepPlan, path: StepPath, sync: bool) -> tuple[str, ...] | None:
        """At a syncing call that runs as a window — an open accumulation window, or ranks that
        hold different tasks — the tasks of the whole window, agreed by every rank; None for a
        step of one micro-batch whose tasks every rank shares (or a micro-batch).

        Raises:
            ValueError: naming ``losses``, on every rank: the ranks hold different tasks for a
                path that cannot agree on them (loss-space methods, steps between refreshes).
        """
        if not sync:
            return None
        local = list(dict.fromkeys([*self.window.names, *plan.names]))
        distributed = self.reducer.world_size > 1 and self.reducer.exact
        if not self.window.open and not distributed:
            return None
        gathered = self.reducer.gather_names(local)
        union = list(dict.fromkeys(name for rank in gathered for name in rank))
        differ = any(set(rank) != set(union) for rank in gathered)
        if not self.window.open and not differ:
            return None
        if not isinstance(path, PerTaskGradientPath):
            raise ValueError(
                f"losses: the ranks hold different tasks ({gathered}), and {self.method.name} weighs "
                "each step's losses on every rank alike; give every rank the same tasks "
                "(gradsurg.data.MultiTaskBatchSampler does)"
            )
        return self._order(union)

    def _order(self, names: list[str]) -> tuple[str, ...]:
        """A window's tasks in the declared order, else in the last step's order when they are
        the same tasks (per-task state follows the names), else as first seen."""
        declared = self.options.tasks
        if declared is not None:
            return tuple(n for n in declared if n in names)
        if self.task_names is not None and sorted(self.task_names) == sorted(names):
            return self.task_names
        return tuple(names)

    def _check_tasks(self, names: tuple[str, ...]) -> None:
        """Refuse a step whose tasks differ from those the method's state belongs to.

        The rule for a step in which a declared task is absent: methods that keep per-task
        state (``tied_to_num_tasks``: GradVac's targets, Nash-MTL's weights, DWA's loss
        history, uncertainty weighting's log-variances, …) cannot keep it for a task they do
        not see, so they need every declared task in every step; every other method runs on
        the tasks present.
        """
        declared = self.options.tasks
        if declared is not None and self.method.tied_to_num_tasks and names != declared:
            missing = [n for n in declared if n not in names]
            raise ValueError(
                f"losses: {type(self.method).__name__} keeps per-task state for the declared tasks "
                f"{list(declared)}, and this step lacks {missing}; make every step (accumulation "
                "window) hold every task, e.g. gradient_accumulation_steps ≥ the number of tasks "
                "with a task-homogeneous sampler, or use a method without per-task state"
            )
        self.method.check_num_tasks(len(names))
        tied = self.method.tied_to_num_tasks and getattr(self.method, "_num_tasks", None) is not None
        if tied and self.task_names is not None and sorted(self.task_names) != sorted(names):
            raise ValueError(
                f"losses: {type(self.method).__name__} is stateful and its state belongs to the "
                f"tasks {list(self.task_names)}; got {list(names)}. Call method.reset() to start "
                "over with other tasks."
            )

    def _save_method_state(self) -> list[Any] | None:
        """Copies of the method's state (every group's, with ``groups=``), or None if stateless."""
        if not self.method.stateful:
            return None
        return [copy.deepcopy(m.state_dict()) for m in (self.group_methods or [self.method])]

    def _restore_method_state(self, saved: list[Any] | None) -> None:
        if saved is None:
            return
        if self.group_methods:
            del self.group_methods[len(saved) :]  # groups met first in the failed step
        for m, state in zip(self.group_methods or [self.method], saved):
            m.load_state_dict(state)

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The method's state (every group's), the refresh schedule and the last task names."""
        return {
            "method": self.method.state_dict(),
            "group_methods": [m.state_dict() for m in self.group_methods[1:]],
            "task_names": self.task_names,
            "refresh": self.refresh.state_dict(),
            "applied_steps": self.applied_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.method.load_state_dict(state["method"])
        extra = state.get("group_methods") or []
        del self.group_methods[1:]
        for group_state in extra:
            group_method = copy.deepcopy(self.method)
            group_method.load_state_dict(group_state)
            self.group_methods.append(group_method)
        names = state.get("task_names")
        self.task_names = None if names is None else tuple(names)
        self.refresh.load_state_dict(state.get("refresh") or {})
        self.applied_steps = int(state.get("applied_steps", 0))
