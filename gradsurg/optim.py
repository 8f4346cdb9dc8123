"""``GradSurgery``: an optimizer wrapper that turns T task losses into one conflict-aware step.

The class holds the options and the optimizer's bookkeeping (delegation to the wrapped
optimizer, skipped steps, checkpoints); every step is run by the engine
(:class:`gradsurg._engine.Engine`), the same one :func:`gradsurg.backward` uses.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ._engine import Engine
from ._engine.plan import trainable_parameters
from ._options import (
    NONFINITE_POLICIES,
    Accumulate,
    DataParallelMode,
    Groups,
    NonFinitePolicy,
    Options,
    Reduction,
    make_options,
)
from ._stats import SurgeryStats
from .methods import Method

__all__ = ["GradSurgery"]


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
            slower on CPUs (measured in ``python -m benchmarks.compare``, section "cheap"). A model that cannot be vmapped
            falls back to one pass per task with a warning; ``stats.tasks_per_backward`` says
            what a step used. Gram and matrix methods, not with FSDP2.
        tasks: the task names (the keys of the losses dict), declared once: steps take them in
            this order, so per-task method state follows the names across steps and
            accumulation windows; a method given by name that needs the number of tasks
            (``uw``, ``imtl_l``) is built for them. A step may hold any subset of them, except
            for methods with per-task state (``Method.tied_to_num_tasks``), which need all of
            them in every step (an error says so). Undeclared, the first step's names are kept.
        accumulate: how an accumulation window (``backward(..., sync=False)`` micro-batches,
            each with any subset of the tasks) combines a task's micro-batches: ``"sum"``
            (default: the summed gradients and losses, so ``method="sum"`` equals plain
            ``loss.backward()`` accumulation and every method equals one big batch whose task
            losses are the summed ones) or ``"mean"`` (divided by the number of micro-batches
            the task appeared in). ``stats.task_micro_batches`` gives the counts.
        trace: a file to which every applied step appends its task names, losses, Gram matrix
            (per group with ``groups=``) and weights (JSON Lines, crash-safe; rank 0 writes under
            DDP): what :func:`gradsurg.replay` and ``python -m gradsurg.report`` read to say
            what every other Gram method would have done. The step numbers continue across a
            checkpoint's resume.

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
        groups: Groups | None = None,
        j_dtype: torch.dtype | None = None,
        batch_tasks: bool | int = False,
        tasks: Sequence[str] | None = None,
        accumulate: Accumulate = "sum",
        trace: str | os.PathLike | None = None,
    ) -> None:
        # Everything is checked before the wrapped optimizer is touched: a failed construction
        # leaves it exactly as it was.
        if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, GradSurgery):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer to wrap, got {type(optimizer).__name__}")
        options = make_options(
            method,
            trainable_parameters(optimizer.param_groups),
            shared=shared,
            task_weights=task_weights,
            reduction=reduction,
            backend=backend,
            nonfinite=nonfinite,
            scaler=scaler,
            data_parallel=data_parallel,
            process_group=process_group,
            refresh_every=refresh_every,
            groups=groups,
            j_dtype=j_dtype,
            batch_tasks=batch_tasks,
            tasks=tasks,
            accumulate=accumulate,
            trace=trace,
        )
        self.optimizer = optimizer
        self._engine = Engine(options)
        self._skip_next_step = False
        own = [p for p in options.method.parameters() if p.requires_grad]
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

    # -- the options (read-only but for the two that a training loop may switch) ----------

    @property
    def options(self) -> Options:
        """The validated options (:class:`gradsurg.Options`)."""
        return self._engine.options

    @property
    def method(self) -> Method:
        """The method (its state is in :meth:`state_dict`)."""
        return self._engine.method

    @property
    def scaler(self) -> Any:
        """The attached ``torch.amp.GradScaler`` (None without one); settable, for trainers
        that create theirs after the optimizer."""
        return self._engine.options.scaler

    @scaler.setter
    def scaler(self, value: Any) -> None:
        if value is not None and not all(hasattr(value, a) for a in ("scale", "get_scale", "is_enabled", "unscale_")):
            raise TypeError(f"scaler: expected a torch.amp.GradScaler, got {type(value).__name__}")
        self._engine.options = replace(self._engine.options, scaler=value)

    @property
    def nonfinite(self) -> NonFinitePolicy:
        """The non-finite policy, ``"raise"`` or ``"skip"``; settable."""
        return self._engine.options.nonfinite

    @nonfinite.setter
    def nonfinite(self, value: NonFinitePolicy) -> None:
        if value not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite: expected one of {NONFINITE_POLICIES}, got {value!r}")
        self._engine.options = replace(self._engine.options, nonfinite=value)

    @property
    def scaler_enabled(self) -> bool:
        """Whether a GradScaler is attached and enabled (it scales the losses it is given)."""
        return self._engine.options.scaler_enabled

    @property
    def reduction(self) -> Reduction:
        """``"sum"`` or ``"mean"``."""
        return self._engine.options.reduction

    @property
    def backend(self) -> str:
        """The kernel backend asked for (the one used is in ``stats.backend``)."""
        return self._engine.options.backend

    @property
    def refresh_every(self) -> int:
        """k of ``refresh_every``."""
        return self._engine.options.refresh_every

    @property
    def shared_parameters(self) -> list[Tensor]:
        """The shared parameters of the last step (or those given as ``shared=``)."""
        return self._engine.shared_parameters

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

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim.Optimizer pickles only defaults/state/param_groups, which here live in the
        # wrapped optimizer; keep the whole wrapper instead (the engine drops its caches).
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the wrapped optimizer."""
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of the wrapped optimizer's parameters (and discard micro-batches
        accumulated with ``backward(..., sync=False)`` and not yet synced)."""
        self._engine.discard_window()
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Step the wrapped optimizer, unless the last :meth:`backward` skipped a non-finite step.

        Raises:
            RuntimeError: micro-batches were accumulated with ``sync=False`` and never synced
                (their surgery has not run: stepping would apply a wrong update).
        """
        window = self._engine.window
        if window.open:
            raise RuntimeError(
                f"step: {window.micro_batches} micro-batch(es) were accumulated "
                "with backward(..., sync=False) but never synced; call backward(losses) with "
                "sync=True (the default) on the last micro-batch before step()"
            )
        if self._skip_next_step:
            self._skip_next_step = False
            return None
        result = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self._engine.after_step()
        return result

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's ``state_dict()`` plus a ``"gradsurg"`` entry with the method's
        state (PCGrad's generator, GradVac's targets, …)."""
        state = self.optimizer.state_dict()
        state["gradsurg"] = {**self._engine.state_dict(), "skip_next_step": self._skip_next_step}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (a plain optimizer ``state_dict`` also works)."""
        state_dict = dict(state_dict)
        ours = state_dict.pop("gradsurg", None)
        if ours is not None:
            self._engine.load_state_dict(ours)
            self._skip_next_step = bool(ours.get("skip_next_step", False))
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return (
            f"GradSurgery(method={self.method.name!r}, reduction={self.reduction!r}, "
            f"backend={self.backend!r}, optimizer={self.optimizer!r})"
        )

    # -- the surgery step ----------------------------------------------------------------------

    def backward(
        self,
        losses: Sequence[Tensor] | Mapping[str, Tensor],
        *,
        sync: bool = True,
        retain_graph: bool = False,
        features: Tensor | None = None,
    ) -> SurgeryStats | None:
        """Compute the conflict-aware gradient of the task losses into ``.grad``.

        :func:`gradsurg.backward` on the wrapped optimizer's parameters, with this optimizer's
        state (accumulation window, method state, refresh schedule) kept between calls.

        Args:
            losses: T scalar losses, as a list/tuple or a dict ``name → loss`` (a dict's order
                may change between steps: per-task state follows the names).
            sync: ``False`` adds each task's gradients to the task's sums without running the
                surgery: a micro-batch of an accumulated step, holding any subset of the tasks
                (one task per batch is fine). The next call with ``sync=True`` (the default)
                adds its own and runs the surgery once, over the union of the tasks seen, on
                their summed gradients (``accumulate=``); the shared parameters are those two
                or more tasks reached over the window. Nothing is written into ``.grad`` before
                that call. (Plain repeated ``backward`` calls instead add up one surgery per
                call, which is not the surgery of the big batch.)
            retain_graph: keep the autograd graph after the last backward pass.
            features: the shared representation h (the output of the last shared layer) for
                representation-level surgery: per-task gradients with respect to h through the
                heads only, the method on their Gram matrix, one backward of the combination
                through the trunk. It equals parameter-level surgery when the weights do not
                depend on G or the trunk's Jacobian has orthonormal rows, and is MGDA-UB's
                approximation otherwise. Gram methods, one process, ``sync=True``; not with
                ``groups=``, ``j_dtype=``, ``batch_tasks=`` or ``refresh_every > 1`` (an error
                names the option).

        Returns:
            A :class:`SurgeryStats` with the Gram matrix, cosines, norms, weights and decisions
            (of the whole accumulated step); None for a ``sync=False`` call.

        Raises:
            TypeError, ValueError: bad ``losses`` (empty, non-scalar, no path to any parameter,
                tasks changed for a method whose state depends on them, a graph that hides its
                parameters), sparse gradients, an argument that does not combine with the
                options or the method (``sync=False`` with a loss-space method, ``features=``
                with ``groups=``, …); the message starts with the argument's name.
            FloatingPointError: a non-finite loss or task gradient, or a combined gradient
                beyond the gradients' dtype, with ``nonfinite="raise"`` (without a GradScaler,
                which decides overflow itself).
            In every case nothing has been changed: ``.grad``, parameters, optimizer and method
            state are as before the call.
        """
        stats = self._engine.backward(
            losses,
            trainable_parameters(self.optimizer.param_groups),
            sync=sync,
            retain_graph=retain_graph,
            features=features,
            add_parameters=lambda fresh: self.optimizer.add_param_group({"params": list(fresh)}),
        )
        if stats is not None:
            # Under a GradScaler the scaler skips overflowing steps itself (it sees the infs).
            self._skip_next_step = stats.skipped and not self.scaler_enabled
        return stats
