"""The path of each method kind through the stages of a step.

A path is chosen once per :class:`~gradsurg.GradSurgery` (:func:`path_for`) from the method's
kind, so the step never switches on a string. Adding a kind adds a method base class in
:mod:`gradsurg.methods.base`, a path class here, and one entry in ``_PATHS``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from ..graph import trace_loss
from ..methods.base import DoubleBackwardMethod, GramMethod, LossWeighting, MatrixMethod, Method
from ..stats import SurgeryStats, make_stats
from .capture import Captured, capture_task_gradients, check_dense
from .gram import HostView, gram_parts, to_host
from .nonfinite import all_finite, nonfinite_tasks
from .plan import StepPlan
from .write import combine_upcast, write_shared, write_shared_subset, write_specific

if TYPE_CHECKING:
    from ..buffer import GradBuffer, SharedBuffers
    from ..kernels.protocol import Backend
    from ..optim import GradSurgery

__all__ = ["DoubleBackwardPath", "GramPath", "LossPath", "MatrixPath", "StepPath", "path_for"]


class StepPath(Protocol):
    """How one kind of method runs a step; returns the step's stats (None for a micro-batch
    captured with ``sync=False``).

    On any exception nothing visible has been changed (``.grad``, parameters, the wrapped
    optimizer); the caller restores the method's state.
    """

    def run(self, plan: StepPlan, surgery: GradSurgery, *, sync: bool = True) -> SurgeryStats | None: ...


class _PerTaskGradientPath:
    """capture → [accumulate] → reduce → gram → decide → weights/combine → write → stats, for
    the methods that work on the per-task gradients of the shared parameters."""

    def run(self, plan: StepPlan, surgery: GradSurgery, *, sync: bool = True) -> SurgeryStats | None:
        pending = surgery._pending
        buffers = surgery._buffers_for(plan, pending)
        kernels = [surgery._kernels_for(group.matrix.device) for group in buffers.groups] if buffers else []
        if buffers is not None and len(buffers.groups) > 1 and not self.handles_groups:
            raise ValueError(
                f"shared: {surgery.method.name} works on J itself and needs the shared parameters "
                "on one device in one dtype; found several (device, dtype) groups: pass shared= "
                "for one group, or use a Gram-based method"
            )
        reducer = surgery._reduce
        try:
            captured = capture_task_gradients(
                plan,
                buffers,
                kernels,
                accumulate=pending is not None,
                on_row=reducer.row_ready if sync else None,
                batching=surgery._batching,
            )
        except BaseException as error:
            if pending is not None:
                surgery._pending = None
                note = getattr(error, "add_note", None)  # Python ≥ 3.11
                if note is not None:
                    note("gradsurg: the micro-batches accumulated with sync=False were discarded")
            raise
        if pending is not None:
            captured = pending.captured.merge(captured)
        if not sync:
            surgery._hold(plan, captured)
            return None
        surgery._pending = None
        try:
            return self._finish(plan, surgery, buffers, kernels, captured)
        finally:
            if buffers is not None:
                buffers.release()

    def _finish(
        self, plan: StepPlan, surgery: GradSurgery, buffers: SharedBuffers | None, kernels: list[Backend], captured: Captured
    ) -> SurgeryStats:
        """reduce → gram → decide → weights/combine → write → stats, after the capture."""
        reducer = surgery._reduce
        reducer(buffers, captured)
        assert captured.losses is not None
        parts = reducer.reduce_gram(gram_parts(buffers, kernels))
        host = to_host(captured.losses, parts, captured.finite_specific, surgery._inv_scale())
        host = replace(host, finite=reducer.agree(host.finite))
        backend = "+".join(dict.fromkeys(k.name for k in kernels)) or "torch"
        name, scale = surgery.method.name, surgery._scale(plan.num_tasks)

        def stats(weights: Tensor | None, bad: tuple[str, ...] = ()) -> SurgeryStats:
            return make_stats(
                plan.names,
                host.losses,
                host.gram,
                weights,
                method=name,
                backend=backend,
                nonfinite_tasks=bad,
                micro_batches=captured.micro_batches,
                tasks_per_backward=captured.tasks_per_backward,
            )

        bad = nonfinite_tasks(plan.names, host.finite, "skip" if surgery.scaler_enabled else surgery.nonfinite)
        plain = torch.full((plan.num_tasks,), scale, dtype=torch.float64)
        if bad:
            if surgery.scaler_enabled:
                # A GradScaler decides overflowing steps: give it the gradients plain PyTorch
                # would (the plain sum, infs included), so it skips the step and backs off.
                _write_combination(buffers, kernels, plain)
                write_specific(plan.params, captured.specific, scale)
            return stats(None, bad)
        if buffers is None:
            # No shared parameters (one task, or tasks that share nothing): every gradient is
            # task-specific and applied as it is; the method has nothing to weigh.
            weights: Tensor | None = plain
        else:
            weights = self.combine(surgery.method, buffers, kernels, host, scale)
        write_specific(plan.params, captured.specific, scale)
        reducer.finish(_written(plan, buffers, captured.specific))
        result = stats(weights)
        group_weights = getattr(self, "group_weights", None)
        return result if group_weights is None else replace(result, group_weights=group_weights)

    #: Whether the path can combine several (device, dtype) groups with one set of weights.
    handles_groups = True

    def combine(
        self, method: Method, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> Tensor | None:
        """Write the combination into the shared ``.grad``; return the weights applied (or None)."""
        raise NotImplementedError


def _written(plan: StepPlan, buffers: SharedBuffers | None, specific: dict[int, Tensor]) -> list[Tensor]:
    """The gradient tensors a step wrote: each group's flat buffer and the task-specific ``.grad``."""
    written = [] if buffers is None else [group.flat for group in buffers.groups]
    for k in sorted(specific):
        grad = plan.params[k].grad
        if grad is not None:
            written.append(grad)
    return written


def _write_combination(buffers: SharedBuffers | None, kernels: list[Backend], weights: Tensor) -> None:
    """``wᵀ·J`` of every layout group into its shared ``.grad``."""
    if buffers is None:
        return
    for group, backend in zip(buffers.groups, kernels):

        def combine(beta: float, g: GradBuffer = group, k: Backend = backend) -> None:
            if g.matrix.dtype == g.flat.dtype:
                k.combine_into(g.flat, g.matrix, weights, beta=beta)
            else:
                combine_upcast(g.flat, g.matrix, weights, beta=beta)

        write_shared(group, combine)


class GramPath(_PerTaskGradientPath):
    """Weights from G; ``wᵀ·J`` by the backend's combine kernel, per layout group."""

    def combine(
        self, method: Method, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> Tensor:
        assert isinstance(method, GramMethod) and host.gram is not None
        weights = method.weights(host.gram, losses=host.losses) * scale
        _write_combination(buffers, kernels, weights)
        return weights


class GroupedGramPath(_PerTaskGradientPath):
    """Grouped surgery (``GradSurgery(groups=...)``): an independent Gram matrix, weights and
    combination per group of shared parameters (GradVac's per-layer strategy; TorchJD's
    grouping recipe), each group with its own copy of the method and its state. The groups'
    Gram matrices come from one pass over J (each column once).

    ``stats.weights`` is NaN (there is one weight vector per group: ``stats.group_weights``);
    ``stats.gram`` is the Gram matrix of the whole shared gradient (the sum of the groups').
    """

    def __init__(self, groups: list[list[Tensor]] | None, methods: list[Method], reducer: Any) -> None:
        self.groups = groups  # None: one group per shared parameter
        self.methods = methods
        self.reducer = reducer
        self.group_weights: Tensor | None = None

    def members(self, buffers: SharedBuffers) -> list[set[int]]:
        """Each group's shared parameters (ids); shared parameters in no group form the last."""
        if self.groups is None:
            return [{id(p)} for p in buffers.params]
        ids = [{id(p) for p in group} for group in self.groups]
        rest = {id(p) for p in buffers.params} - set().union(*ids)
        return [*ids, rest] if rest else ids

    def combine(
        self, method: Method, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> None:
        members = self.members(buffers)
        while len(self.methods) < len(members):
            self.methods.append(copy.deepcopy(self.methods[0]))  # a fresh state per new group
        num_tasks = buffers.num_tasks
        weights_per_group = []
        for ids, group_method in zip(members, self.methods):
            parts = []
            for buf, backend in zip(buffers.groups, kernels):
                cols = [j for j, p in enumerate(buf.params) if id(p) in ids]
                if cols:
                    parts.append(backend.gram_lists([[buf.rows[t][j] for j in cols] for t in range(num_tasks)]))
            gram = to_host(host.losses, self.reducer.reduce_gram(parts), None, host.inv_scale).gram
            assert gram is not None
            assert isinstance(group_method, GramMethod)
            weights = group_method.weights(gram, losses=host.losses) * scale
            weights_per_group.append(weights)
            w = weights.tolist()
            for buf in buffers.groups:
                cols = [j for j, p in enumerate(buf.params) if id(p) in ids]
                if not cols:
                    continue

                def combine(beta: float, b: GradBuffer = buf, cs: list[int] = cols, ws: list[float] = w) -> None:
                    for j in cs:
                        out = b.grads[j]
                        if beta == 0.0:
                            out.zero_()
                        for t, wt in enumerate(ws):
                            out.add_(b.rows[t][j], alpha=wt)

                write_shared_subset(buf, cols, combine)
        self.group_weights = torch.stack(weights_per_group)


class MatrixPath(_PerTaskGradientPath):
    """The method combines J itself (no weights); one layout group only."""

    handles_groups = False

    def combine(
        self, method: Method, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> None:
        assert isinstance(method, MatrixMethod)
        group = buffers.groups[0]
        if host.inv_scale is not None:
            # The method's rule and state are for the true gradients: unscale J (scratch by
            # now), and scale the result back for the GradScaler, which unscales .grad.
            group.matrix.mul_(host.inv_scale)
            scale = scale / host.inv_scale
        write_shared(group, lambda beta: _combine_matrix(method, group, beta, scale))
        return


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

    #: Whether micro-batches can be accumulated (the objective is linear in the losses).
    accumulates = False
    #: Whether :meth:`adjust` differentiates the graph again (it is then kept for it).
    keeps_graph = False

    def method_of(self, surgery: GradSurgery) -> Method:
        """The method whose objective this path differentiates."""
        return surgery.method

    def adjust(self, plan: StepPlan, specific: dict[int, Tensor]) -> dict[int, Tensor]:
        """A last look at the gradients before they are written (none by default)."""
        return specific

    def run(self, plan: StepPlan, surgery: GradSurgery, *, sync: bool = True) -> SurgeryStats | None:
        method = self.method_of(surgery)
        name = surgery.method.name
        if not sync and not self.accumulates:
            raise ValueError(
                f"sync: {name} weighs the losses of the whole batch before any gradient exists, "
                "so micro-batches cannot be accumulated with sync=False; sum the micro-batch "
                "losses into one backward(losses) call, or use a gradient-based method"
            )
        reducer = surgery._reduce
        if reducer.world_size > 1 and reducer.exact and isinstance(method, DoubleBackwardMethod):
            # (Under FSDP2 as under DDP: the cosines of global gradients need them all, differentiably.)
            raise ValueError(
                f"data_parallel: {name} differentiates through the task gradients, which would "
                "need a differentiable all-reduce of every gradient; use data_parallel='local' "
                "(each rank's own regulariser, gradients averaged) or one process"
            )
        inv_scale = surgery._inv_scale()
        losses = torch.stack([loss.detach().to(torch.float64) for loss in plan.scalars])
        if reducer.exact:
            reducer.mean_([losses])  # the global batch's losses: the weights are the same everywhere
        host = to_host(losses, [], None, inv_scale)
        host = replace(host, finite=reducer.agree(host.finite))
        # Non-finite losses are decided before the method sees them: loss-space methods keep
        # loss histories and take logarithms, which a NaN would poison.
        bad = nonfinite_tasks(plan.names, host.finite, "skip" if surgery.scaler_enabled else surgery.nonfinite)
        if bad:
            if surgery.scaler_enabled:
                self._write_plain(plan, surgery)
            return make_stats(plan.names, host.losses, None, None, method=name, backend="torch", nonfinite_tasks=bad)
        local = torch.stack(list(plan.scalars))
        if reducer.world_size > 1 and reducer.exact:
            # Values of the global losses, gradients of the local ones: averaged over the ranks,
            # the gradients are those of the objective of the global batch.
            local = local + (losses.to(local) - local).detach()
        scaled = local * torch.tensor(plan.alphas, dtype=local.dtype, device=local.device)
        if inv_scale is not None:
            # The method sees the true losses; the objective is scaled back for the GradScaler.
            objective, gram = self.objective(method, scaled * inv_scale, plan)
            objective = objective / inv_scale
        else:
            objective, gram = self.objective(method, scaled, plan)
        # Learnable method parameters created lazily (at the first objective) join the wrapped
        # optimizer once this step has succeeded.
        params = plan.params
        known = {id(p): k for k, p in enumerate(params)}
        method_params = [p for p in method.parameters() if p.requires_grad]
        fresh = [p for p in method_params if id(p) not in known]
        positions = sorted(set().union(*plan.reached) | {known[id(p)] for p in method_params if id(p) in known})
        inputs = plan.targets(positions) + fresh
        grads: Sequence[Tensor | None] = torch.autograd.grad(
            objective, inputs, retain_graph=plan.retain_graph or self.keeps_graph, allow_unused=True
        )
        for k, g in zip(positions, grads):
            if g is not None:
                check_dense("objective", k, g)
        local_grads = plan.localize(positions, grads[: len(positions)])
        specific = {k: g for k, g in zip(positions, local_grads) if g is not None}
        fresh_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(fresh, grads[len(positions) :])]
        specific = self.adjust(plan, specific)
        if reducer.averages_gradients:
            reducer.mean_([*specific.values(), *fresh_grads])
        scale = surgery._scale(plan.num_tasks)
        everywhere_finite = reducer.agree(all_finite([*specific.values(), *fresh_grads]).reshape(1).cpu())
        if not bool(everywhere_finite.all()):
            # Name the tasks whose gradient norm is non-finite; if none is, the objective itself
            # overflowed and every task is named.
            finite = (
                torch.isfinite(gram.diagonal()) if gram is not None else torch.ones(plan.num_tasks, dtype=torch.bool)
            )
            if finite.all():
                finite = torch.zeros_like(finite)
            policy = "skip" if surgery.scaler_enabled else surgery.nonfinite
            bad = nonfinite_tasks(plan.names, finite, policy)
            if surgery.scaler_enabled:
                write_specific(params, specific, scale)
            return make_stats(plan.names, host.losses, gram, None, method=name, backend="torch", nonfinite_tasks=bad)
        write_specific(params, specific, scale)
        if fresh:
            surgery.optimizer.add_param_group({"params": fresh})
            for p, g in zip(fresh, fresh_grads):
                p.grad = g * scale
        reducer.finish(
            [g for g in [*(params[k].grad for k in sorted(specific)), *(p.grad for p in fresh)] if g is not None]
        )
        if not sync:
            return None  # a micro-batch of a linear objective: its gradients are in .grad already
        last = getattr(method, "last_weights", None)
        weights = None if last is None else last * scale
        return make_stats(plan.names, host.losses, gram, weights, method=name, backend="torch")

    @staticmethod
    def _write_plain(plan: StepPlan, surgery: GradSurgery) -> None:
        # Overflow under a GradScaler: the gradient of Σ α_t L_t, infs included, as plain
        # PyTorch would write it, so that the scaler skips the step and backs off.
        total = torch.stack([loss * alpha for loss, alpha in zip(plan.scalars, plan.alphas)]).sum()
        positions = sorted(set().union(*plan.reached))
        grads: Sequence[Tensor | None] = torch.autograd.grad(
            total, plan.targets(positions), retain_graph=plan.retain_graph, allow_unused=True
        )
        grads = plan.localize(positions, grads)
        write_specific(
            plan.params, {k: g for k, g in zip(positions, grads) if g is not None}, surgery._scale(plan.num_tasks)
        )


class RepresentationPath:
    """Representation-level surgery (``backward(losses, features=h)``; MGDA-UB of Sener & Koltun
    2018, LibMTL's ``rep_grad``): the per-task gradients are taken with respect to the shared
    representation h, through the task heads only; the method weighs their Gram matrix; one
    backward of ``Σ_t w_t ∂(α_t L_t)/∂h`` goes through the trunk.

    It equals parameter-level surgery when the weights do not depend on G (``sum``, ``mean``),
    and for any Gram method when the trunk's Jacobian ∂h/∂θ has orthonormal rows (then
    ``J_θ J_θᵀ = I`` and both Gram matrices coincide) — h the shared parameter itself, or a linear
    layer on one unit-norm input. Otherwise it is MGDA-UB's approximation: the Gram matrix of
    the representation gradients stands in for that of the parameter gradients (T backward
    passes through the heads, one through the trunk, instead of T through everything).
    """

    def __init__(self, features: Tensor) -> None:
        if not isinstance(features, Tensor) or not features.requires_grad:
            raise ValueError("features: expected the shared representation h, a tensor that requires grad")
        self.features = features

    def run(self, plan: StepPlan, surgery: GradSurgery, *, sync: bool = True) -> SurgeryStats | None:
        method, name = surgery.method, surgery.method.name
        if not isinstance(method, GramMethod):
            raise ValueError(
                f"features: {name} is not a Gram method; representation-level surgery weighs a Gram matrix"
            )
        if not sync:
            raise ValueError("sync: representation-level surgery (features=) does not accumulate micro-batches")
        if surgery._reduce.world_size > 1 or plan.sharding is not None:
            raise ValueError("features: representation-level surgery runs in one process (no DDP/FSDP2 yet)")
        h = self.features
        index = {id(p): k for k, p in enumerate(plan.params)}
        upstream = sorted(trace_loss(h, index).positions)
        after = [k for k in plan.shared_idx if k not in set(upstream)]
        if after:
            raise ValueError(
                f"features: {len(after)} shared parameter(s) are used after the features (by several "
                "tasks), where a representation-level update cannot reach them; pass the output of "
                "the last shared layer as features"
            )
        up = set(upstream)
        rows: list[Tensor] = []
        specific: dict[int, Tensor] = {}
        for t, loss in enumerate(plan.scalars):
            own = [k for k in plan.reached[t] if k not in up]
            grads = torch.autograd.grad(
                loss * plan.alphas[t], [h, *plan.targets(own)], retain_graph=True, allow_unused=True
            )
            rep = torch.zeros_like(h) if grads[0] is None else grads[0]
            rows.append(rep.reshape(-1))
            for k, g in zip(own, grads[1:]):
                if g is not None:
                    check_dense(plan.names[t], k, g)
                    specific[k] = g if k not in specific else specific[k] + g
        matrix = torch.stack(rows)
        kernels = surgery._kernels_for(matrix.device)
        losses = torch.stack([v.detach().to(torch.float64) for v in plan.scalars])
        host = to_host(losses, [kernels.gram(matrix)], None, surgery._inv_scale())
        if specific and not bool(all_finite(specific.values())):
            host = replace(host, finite=torch.zeros_like(host.finite))
        bad = nonfinite_tasks(plan.names, host.finite, surgery.nonfinite)
        backend = kernels.name
        if bad:
            return make_stats(
                plan.names, host.losses, host.gram, None, method=name, backend=backend, nonfinite_tasks=bad
            )
        assert host.gram is not None
        scale = surgery._scale(plan.num_tasks)
        weights = method.weights(host.gram, losses=host.losses) * scale
        combined = (weights.to(matrix) @ matrix).view_as(h)
        trunk = torch.autograd.grad(
            h, plan.targets(upstream), grad_outputs=combined, retain_graph=plan.retain_graph, allow_unused=True
        )
        if not bool(all_finite(g for g in trunk if g is not None)):
            # The representation's gradients were finite but the trunk's overflowed: every task
            # is named, nothing is written.
            bad = nonfinite_tasks(plan.names, torch.zeros(plan.num_tasks, dtype=torch.bool), surgery.nonfinite)
            return make_stats(
                plan.names, host.losses, host.gram, None, method=name, backend=backend, nonfinite_tasks=bad
            )
        write_specific(plan.params, {k: g for k, g in zip(upstream, trunk) if g is not None}, 1.0)
        write_specific(plan.params, specific, scale)
        return make_stats(plan.names, host.losses, host.gram, weights, method=name, backend=backend)


class _FixedWeights(LossWeighting):
    """Weights cached at the last refresh step, as a loss weighting (``Σ_t w_t L_t``)."""

    name = ""

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.cached = weights

    def loss_weights(self, losses: Tensor) -> Tensor:
        return self.cached.to(losses)


class CachedWeightsPath(LossPath):
    """A step between refreshes (``GradSurgery(refresh_every=k)``): one backward of
    ``Σ_t w_t α_t L_t`` with the weights of the last refresh step, instead of T backward passes.

    The shared parameters get ``Σ_t w_t ∇(α_t L_t)``; a task-specific parameter, reached by one
    task t only, gets ``w_t ∇(α_t L_t)`` from that backward, which is divided by ``w_t`` so that
    it keeps its ordinary gradient ``∇(α_t L_t)``, as at refresh steps (a second, small backward
    serves tasks whose cached weight is 0). Linear in the losses, so micro-batches accumulate.
    """

    accumulates = True

    def __init__(self, weights: Tensor) -> None:
        self._method = _FixedWeights(weights)
        self.keeps_graph = bool((weights == 0).any())

    def method_of(self, surgery: GradSurgery) -> Method:
        return self._method

    def adjust(self, plan: StepPlan, specific: dict[int, Tensor]) -> dict[int, Tensor]:
        weights = self._method.cached.tolist()
        shared = set(plan.shared_idx)
        owner: dict[int, list[int]] = {}
        for t, reached in enumerate(plan.reached):
            for k in reached:
                owner.setdefault(k, []).append(t)
        zero_tasks: dict[int, list[int]] = {}
        out = dict(specific)
        for k, tasks in owner.items():
            if k in shared or len(tasks) != 1:
                continue
            w = weights[tasks[0]]
            if w != 0.0 and k in out:
                out[k] = out[k] / w
            elif w == 0.0:
                zero_tasks.setdefault(tasks[0], []).append(k)
        for t, positions in zero_tasks.items():
            scaled = plan.scalars[t] * plan.alphas[t]
            grads = torch.autograd.grad(scaled, plan.targets(positions), retain_graph=True, allow_unused=True)
            for k, g in zip(positions, plan.localize(positions, grads)):
                if g is not None:
                    out[k] = g
        return out


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
