"""``GradSurgery``: an optimizer wrapper that turns T task losses into one conflict-aware step."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .buffer import GradBuffer
from .graph import reached_parameters
from .kernels.dispatch import BACKENDS, get_backend
from .losses import check_task_weights_arg, normalise_losses, normalise_task_weights
from .methods import Method, resolve_method
from .stats import SurgeryStats

__all__ = ["GradSurgery"]


@dataclass(frozen=True)
class _Step:
    """What :meth:`GradSurgery.backward` established before choosing the method's path."""

    names: list[str]
    scalars: list[Tensor]
    alphas: list[float]
    params: list[Tensor]
    reached: list[list[int]]  # per task, positions in params of the parameters it reaches
    shared_idx: list[int]  # positions in params of the shared parameters
    retain_graph: bool


_REDUCTIONS = ("sum", "mean")
_NONFINITE = ("raise", "skip")


def _check_dense(name: str, k: int, grad: Tensor) -> None:
    if grad.is_sparse or grad.layout != torch.strided:
        raise ValueError(
            f"losses[{name!r}]: parameter {k} of the optimizer got a sparse gradient; "
            "gradient surgery needs dense gradients (e.g. Embedding(sparse=False))"
        )


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
        reduction: str = "sum",
        backend: str = "auto",
        nonfinite: str = "raise",
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, GradSurgery):
            raise TypeError(
                f"optimizer: expected a torch.optim.Optimizer to wrap, got {type(optimizer).__name__}"
            )
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
        if nonfinite not in _NONFINITE:
            raise ValueError(f"nonfinite: expected one of {_NONFINITE}, got {nonfinite!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
        if isinstance(task_weights, Tensor):
            task_weights = task_weights.tolist()
        check_task_weights_arg(task_weights)
        self.optimizer = optimizer
        self.method = resolve_method(method)
        own = [p for p in self.method.parameters() if p.requires_grad]
        if own:
            # Learnable method quantities (uncertainty weighting's log-variances, …) are trained
            # by the wrapped optimizer like any parameter.
            present = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [p for p in own if id(p) not in present]
            if missing:
                optimizer.add_param_group({"params": missing})
        self.reduction = reduction
        self.backend = backend
        self.nonfinite = nonfinite
        self.task_weights = task_weights
        self._shared = None if shared is None else self._check_shared(shared)
        self._buffer: GradBuffer | None = None
        self._skip_next_step = False
        # What torch.optim.Optimizer.__init__ sets up for hooks; param_groups, state and
        # defaults are the wrapped optimizer's (see the properties below).
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

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
        params, seen = [], set()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

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
            FloatingPointError: non-finite gradients with ``nonfinite="raise"``.
            In every case nothing has been changed: ``.grad``, parameters, optimizer and method
            state are as before the call.
        """
        names, scalars = normalise_losses(losses)
        alphas = normalise_task_weights(self.task_weights, names)
        self.method.check_num_tasks(len(scalars))
        params = self._parameters()
        index = {id(p): k for k, p in enumerate(params)}
        reached = [sorted(reached_parameters(loss, index)) for loss in scalars]
        for name, r in zip(names, reached):
            if not r:
                raise ValueError(f"losses[{name!r}]: reaches none of the wrapped optimizer's parameters")
        if self._shared is None:
            counts: dict[int, int] = {}
            for r in reached:
                for k in r:
                    counts[k] = counts.get(k, 0) + 1
            shared_idx = [k for k in sorted(counts) if counts[k] >= 2]
        else:
            shared_idx = [index[id(p)] for p in self._shared]
        saved = copy.deepcopy(self.method.state_dict()) if self.method.stateful else None
        step = _Step(names, scalars, alphas, params, reached, shared_idx, retain_graph)
        try:
            if self.method.kind in ("loss", "double_backward"):
                stats = self._backward_objective(step)
            else:
                stats = self._backward_surgery(step)
        except BaseException:
            # Whatever failed, the method's state is as it was (a stateful objective may have
            # advanced it before the failure).
            if saved is not None:
                self.method.load_state_dict(saved)
            raise
        if stats.skipped and saved is not None:
            self.method.load_state_dict(saved)
        return stats

    def _backward_surgery(self, step: _Step) -> SurgeryStats:
        names, scalars, alphas, params = step.names, step.scalars, step.alphas, step.params
        reached, shared_idx, retain_graph = step.reached, step.shared_idx, step.retain_graph
        num_tasks = len(scalars)
        shared = [params[k] for k in shared_idx]
        slot = {k: s for s, k in enumerate(shared_idx)}
        buffer = self._buffer_for(shared, num_tasks)
        kernels = get_backend(self.backend, shared[0].device if shared else params[0].device)
        if self._shared is not None:
            # Declared shared parameters a task does not reach get a zero row segment.
            reached = [sorted(set(r) | set(shared_idx)) for r in reached]

        specific: dict[int, Tensor] = {}
        finite_specific: list[Tensor] = []
        for t, (name, loss) in enumerate(zip(names, scalars)):
            grads = torch.autograd.grad(
                loss,
                [params[k] for k in reached[t]],
                grad_outputs=torch.full_like(loss, alphas[t]),
                retain_graph=retain_graph or t < num_tasks - 1,
                allow_unused=True,
            )
            row: list[Tensor | None] = [None] * len(shared)
            flags = []
            for k, g in zip(reached[t], grads):
                if g is None:
                    continue
                _check_dense(name, k, g)
                if k in slot:
                    row[slot[k]] = g
                else:
                    flags.append(torch.isfinite(g).all())
                    specific[k] = g if k not in specific else specific[k] + g
            finite_specific.append(torch.stack(flags).all() if flags else loss.new_ones((), dtype=torch.bool))
            if buffer is not None:
                kernels.flatten_into(buffer.rows[t], row)

        if buffer is not None:
            gram = kernels.gram(buffer.matrix)
        else:
            gram = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
        # The one host synchronisation of the step: the Gram matrix, the finiteness flags and the
        # losses come to the CPU together, where the tiny T×T method runs.
        gram = gram.cpu()
        finite = torch.isfinite(gram.diagonal()) & torch.stack(finite_specific).cpu()
        loss_values = torch.stack([loss.detach().to(torch.float64) for loss in scalars]).cpu()
        skipped = self._check_finite(names, finite, loss_values, gram, kernels.NAME)
        if skipped is not None:
            return skipped

        scale = 1.0 / num_tasks if self.reduction == "mean" else 1.0
        if self.method.kind == "matrix":
            weights = torch.full((num_tasks,), float("nan"), dtype=torch.float64)
            if buffer is not None:
                self._write_shared(buffer, lambda beta: self._combine_matrix(buffer, beta, scale))
        else:
            weights = self.method.weights(gram, losses=loss_values) * scale
            if buffer is not None:
                self._write_shared(buffer, lambda beta: kernels.combine_into(buffer.flat, buffer.matrix, weights, beta=beta))
        self._write_specific(params, specific, scale)
        self._skip_next_step = False
        return SurgeryStats(
            task_names=tuple(names),
            losses=loss_values,
            gram=gram,
            weights=weights,
            method=self.method.name,
            backend=kernels.NAME,
        )

    def _backward_objective(self, step: _Step) -> SurgeryStats:
        # Loss-space methods and the cosine regulariser: one objective, one (possibly double)
        # backward, ordinary gradients for every parameter it reaches.
        names, scalars, alphas, params = step.names, step.scalars, step.alphas, step.params
        reached, shared_idx, retain_graph = step.reached, step.shared_idx, step.retain_graph
        num_tasks = len(scalars)
        scaled = torch.stack([loss * alpha for loss, alpha in zip(scalars, alphas)])
        gram = None
        if self.method.kind == "double_backward":
            objective, gram = self.method.objective(scaled, [params[k] for k in shared_idx])
            gram = gram.detach().to(device="cpu", dtype=torch.float64)
        else:
            objective = self.method.objective(scaled)
        # Learnable method parameters created lazily (at the first objective) join the wrapped
        # optimizer once this step has succeeded.
        known = {id(p): k for k, p in enumerate(params)}
        method_params = [p for p in self.method.parameters() if p.requires_grad]
        fresh = [p for p in method_params if id(p) not in known]
        positions = sorted(set().union(*reached) | {known[id(p)] for p in method_params if id(p) in known})
        inputs = [params[k] for k in positions] + fresh
        grads = torch.autograd.grad(objective, inputs, retain_graph=retain_graph, allow_unused=True)
        specific: dict[int, Tensor] = {}
        for k, g in zip(positions, grads):
            if g is not None:
                _check_dense("objective", k, g)
                specific[k] = g
        fresh_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(fresh, grads[len(positions):])]
        flags = [torch.isfinite(g).all() for g in [*specific.values(), *fresh_grads]]
        loss_values = torch.stack([loss.detach().to(torch.float64) for loss in scalars]).cpu()
        if flags and not bool(torch.stack(flags).all()):
            # Name the tasks whose loss (or gradient norm) is non-finite; if none is, the
            # objective itself overflowed and every task is named.
            finite = torch.isfinite(loss_values)
            if gram is not None:
                finite &= torch.isfinite(gram.diagonal())
            if finite.all():
                finite = torch.zeros_like(finite)
            return self._check_finite(names, finite, loss_values, gram, "torch")
        scale = 1.0 / num_tasks if self.reduction == "mean" else 1.0
        self._write_specific(params, specific, scale)
        if fresh:
            self.optimizer.add_param_group({"params": fresh})
            for p, g in zip(fresh, fresh_grads):
                p.grad = g * scale
        last = getattr(self.method, "last_weights", None)
        weights = last * scale if last is not None else torch.full((num_tasks,), float("nan"), dtype=torch.float64)
        self._skip_next_step = False
        return SurgeryStats(
            task_names=tuple(names),
            losses=loss_values,
            gram=gram,
            weights=weights,
            method=self.method.name,
            backend="torch",
        )

    def _check_finite(
        self, names: list[str], finite: Tensor, loss_values: Tensor, gram: Tensor | None, backend: str
    ) -> SurgeryStats | None:
        """Raise or report a skipped step if any task is non-finite; None if all are finite."""
        bad = [n for n, ok in zip(names, finite.tolist()) if not ok]
        if not bad:
            return None
        if self.nonfinite == "raise":
            raise FloatingPointError(
                f"losses: non-finite gradients for task(s) {bad}; nothing was changed "
                "(pass nonfinite='skip' to skip such steps)"
            )
        self._skip_next_step = True
        return SurgeryStats(
            task_names=tuple(names),
            losses=loss_values,
            gram=gram,
            weights=torch.zeros(len(names), dtype=torch.float64),
            method=self.method.name,
            backend=backend,
            skipped=True,
            nonfinite_tasks=tuple(bad),
        )

    def _buffer_for(self, shared: list[Tensor], num_tasks: int) -> GradBuffer | None:
        if not shared:
            return None
        if self._buffer is None or self._buffer.key != GradBuffer.make_key(shared, num_tasks):
            self._buffer = GradBuffer(shared, num_tasks)
        return self._buffer

    @staticmethod
    def _write_shared(buffer: GradBuffer, combine: Callable[[float], None]) -> None:
        # .grad of the shared parameters become views of the buffer's flat vector, so the
        # combination is written once, in place. Existing gradients are brought into the flat
        # vector first so that the combine can accumulate like Tensor.backward does.
        accumulate = any(p.grad is not None for p in buffer.params)
        if accumulate:
            for k, p in enumerate(buffer.params):
                if p.grad is None:
                    buffer.grads[k].zero_()
                elif not buffer.owns_grad(k, p.grad):
                    buffer.grads[k].copy_(p.grad)
        combine(1.0 if accumulate else 0.0)
        for k, p in enumerate(buffer.params):
            p.grad = buffer.grads[k]

    def _combine_matrix(self, buffer: GradBuffer, beta: float, scale: float) -> None:
        # A matrix method writes its own combination; the 1/T of reduction="mean" must scale only
        # that, not gradients already accumulated in the buffer.
        if scale == 1.0:
            self.method.combine_into(buffer.flat, buffer.matrix, beta=beta)
        elif beta == 0.0:
            self.method.combine_into(buffer.flat, buffer.matrix, beta=0.0)
            buffer.flat.mul_(scale)
        else:
            fresh = torch.empty_like(buffer.flat)
            self.method.combine_into(fresh, buffer.matrix, beta=0.0)
            buffer.flat.add_(fresh, alpha=scale)

    @staticmethod
    def _write_specific(params: list[Tensor], specific: dict[int, Tensor], scale: float) -> None:
        for k, g in specific.items():
            p = params[k]
            if scale != 1.0:
                g = g * scale
            if p.grad is not None:
                p.grad.add_(g)
            elif g.stride() == p.stride():
                p.grad = g
            else:
                # Gradients such as an expanded ones tensor (stride 0) cannot be modified in place
                # by the optimizer or clip_grad_norm_; give the parameter its own layout.
                p.grad = torch.empty_like(p).copy_(g)
