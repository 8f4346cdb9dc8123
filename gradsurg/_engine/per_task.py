"""The per-task paths: capture → [accumulate] → reduce → gram → decide → weights → write →
stats, for the methods that work on the per-task gradients of the shared parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._stats import SurgeryStats, make_stats
from ..methods.base import GramMethod, MatrixMethod, Method
from .capture import Captured, capture_task_gradients, check_dense
from .context import StepContext
from .decide import all_finite, nonfinite_tasks
from .gram import HostView, gram_parts, to_host
from .plan import StepPlan
from .window_step import window_step
from .write import combine_upcast, combine_wide, write_shared, write_specific

if TYPE_CHECKING:
    from .._buffer import GradBuffer, SharedBuffers
    from ..kernels.protocol import Backend

__all__ = ["CombinationOverflow", "GramPath", "MatrixPath", "PerTaskGradientPath", "write_combination"]


class CombinationOverflow(Exception):
    """The combined gradient wᵀ·J overflows the gradients' dtype (nothing was written)."""


class PerTaskGradientPath:
    """The stages shared by the per-task kinds; :meth:`combine` is each kind's own."""

    #: Whether the path can combine several (device, dtype) groups with one set of weights.
    handles_groups = True
    #: Grouped surgery: each group's Gram matrix of the last step (for its stats).
    last_group_grams: Tensor | None = None

    def run(self, plan: StepPlan, ctx: StepContext, *, sync: bool = True) -> SurgeryStats | None:
        if sync and ctx.window_names is None:
            return self._direct(plan, ctx)
        self._capture_into_window(plan, ctx)
        if not sync:
            return None
        assert ctx.window_names is not None
        return self._sync_window(plan, ctx, ctx.window_names)

    def _check_groups(self, buffers: SharedBuffers | None, ctx: StepContext) -> None:
        if buffers is not None and len(buffers.groups) > 1 and not self.handles_groups:
            raise ValueError(
                f"shared: {ctx.options.method.name} works on J itself and needs the shared parameters "
                "on one device in one dtype; found several (device, dtype) groups: pass shared= "
                "for one group, or use a Gram-based method"
            )

    def _direct(self, plan: StepPlan, ctx: StepContext) -> SurgeryStats:
        """A step of one micro-batch: the gradients straight into J."""
        buffers = ctx.buffers.acquire(plan.shared, plan.num_tasks)
        kernels = [ctx.kernels(group.matrix.device) for group in buffers.groups] if buffers else []
        self._check_groups(buffers, ctx)
        captured = capture_task_gradients(
            plan, buffers, kernels, on_row=ctx.reducer.row_ready, batching=ctx.batching
        )
        try:
            return self._finish(plan, ctx, buffers, kernels, captured)
        finally:
            if buffers is not None:
                buffers.release()

    def _capture_into_window(self, plan: StepPlan, ctx: StepContext) -> None:
        """A micro-batch: each task's gradients added to its sums in the window."""
        window = ctx.window
        ctx.reducer.check_micro_batch_tasks(plan.names)
        try:
            for t, grads in ctx.batching.gradients(plan):
                for k, g in zip(plan.reached[t], grads):
                    if g is not None:
                        check_dense(plan.names[t], k, g)
                window.add(plan, t, plan.localize(plan.reached[t], grads), plan.scalars[t])
        except BaseException as error:
            window.discard(error)
            raise
        # As the capture stage counts it (after a fallback, one task per call).
        window.close_micro_batch(min(ctx.batching.chunk, plan.num_tasks) if ctx.batching.active else 1)

    def _sync_window(self, plan: StepPlan, ctx: StepContext, names: tuple[str, ...]) -> SurgeryStats:
        """The syncing call of a window: one surgery over the union of its tasks."""
        sums, micro_batches, tasks_per_backward = ctx.window.take()
        step = window_step(plan, sums, names, ctx)
        buffers = ctx.buffers.acquire(step.plan.shared, step.plan.num_tasks)
        kernels = [ctx.kernels(group.matrix.device) for group in buffers.groups] if buffers else []
        self._check_groups(buffers, ctx)
        try:
            captured = step.fill(buffers, kernels, micro_batches, tasks_per_backward)
            return replace(
                self._finish(step.plan, ctx, buffers, kernels, captured), task_micro_batches=step.counts
            )
        finally:
            if buffers is not None:
                buffers.release()

    def _finish(
        self, plan: StepPlan, ctx: StepContext, buffers: SharedBuffers | None, kernels: list[Backend], captured: Captured
    ) -> SurgeryStats:
        """reduce → gram → decide → weights/combine → write → stats, after the capture."""
        options, reducer = ctx.options, ctx.reducer
        reducer.reduce_captured(captured)
        assert captured.losses is not None
        parts = reducer.reduce_gram(gram_parts(buffers, kernels))
        host = to_host(captured.losses, parts, captured.finite_specific, options.inv_scale())
        host = replace(host, finite=reducer.agree(host.finite))
        backend = "+".join(dict.fromkeys(k.name for k in kernels)) or "torch"
        scale = options.scale(plan.num_tasks)

        def stats(
            weights: Tensor | None,
            bad: tuple[str, ...] = (),
            group_weights: Tensor | None = None,
            group_grams: Tensor | None = None,
        ) -> SurgeryStats:
            return make_stats(
                plan.names,
                host.losses,
                host.gram,
                weights,
                method=options.method.name,
                backend=backend,
                nonfinite_tasks=bad,
                micro_batches=captured.micro_batches,
                tasks_per_backward=captured.tasks_per_backward,
                group_weights=group_weights,
                group_grams=group_grams,
            )

        bad = nonfinite_tasks(plan.names, host.finite, options.policy)
        plain = torch.full((plan.num_tasks,), scale, dtype=torch.float64)
        if bad:
            if options.scaler_enabled:
                # A GradScaler decides overflowing steps: give it the gradients plain PyTorch
                # would (the plain sum, infs included), so it skips the step and backs off.
                write_combination(buffers, kernels, plain)
                write_specific(plan.params, captured.specific, scale)
            return stats(None, bad)
        group_weights = None
        if buffers is None:
            # No shared parameters (one task, or tasks that share nothing): every gradient is
            # task-specific and applied as it is; the method has nothing to weigh.
            weights: Tensor | None = plain
        else:
            try:
                weights, group_weights = self.combine(ctx, buffers, kernels, host, scale)
            except CombinationOverflow:
                # The exact update is beyond the gradients' dtype: a non-finite step, decided
                # by the policy like any other (every task is named).
                bad = nonfinite_tasks(plan.names, torch.zeros(plan.num_tasks, dtype=torch.bool), options.policy)
                if options.scaler_enabled:
                    write_combination(buffers, kernels, plain)
                    write_specific(plan.params, captured.specific, scale)
                return stats(None, bad)
        write_specific(plan.params, captured.specific, scale)
        reducer.finish(_written(plan, buffers, captured.specific))
        return stats(weights, group_weights=group_weights, group_grams=self.last_group_grams)

    def combine(
        self, ctx: StepContext, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> tuple[Tensor | None, Tensor | None]:
        """Write the combination into the shared ``.grad``; return the weights applied (or
        None) and the per-group weights (grouped surgery; else None)."""
        raise NotImplementedError


def _written(plan: StepPlan, buffers: SharedBuffers | None, specific: dict[int, Tensor]) -> list[Tensor]:
    """The gradient tensors a step wrote: each group's flat buffer and the task-specific ``.grad``."""
    written = [] if buffers is None else [group.flat for group in buffers.groups]
    for k in sorted(specific):
        grad = plan.params[k].grad
        if grad is not None:
            written.append(grad)
    return written


def write_combination(
    buffers: SharedBuffers | None,
    kernels: list[Backend],
    weights: Tensor,
    norms: Tensor | None = None,
    agree: Callable[[Tensor], Tensor] = lambda ok: ok,
) -> bool:
    """``wᵀ·J`` of every layout group into its shared ``.grad``; False (nothing written) when
    the combination itself overflows the gradients' dtype.

    Gradients whose norms span many orders of magnitude (1e-30 next to 1e30) give weights
    beyond the float32 range, or products w_t·g_t whose running sum overflows, although the
    update is representable. The kernels' combine is used only where that cannot happen:
    weights within the dtype's range and Σ_t |w_t|·‖g_t‖ (``norms``: √G_tt, known on the host)
    within its maximum, which bounds every partial sum. Other steps combine in float64 into a
    scratch vector, checked before anything is written. ``agree`` makes that decision one
    across the ranks where their weights differ (``data_parallel="local"``). ``norms=None``
    (plain sums, the GradScaler's overflow path) takes the kernels' combine as it is.
    """
    if buffers is None:
        return True
    wide: list[Tensor | None] = []
    ok = True
    for group in buffers.groups:
        if norms is None or _fits(weights, norms, group.flat.dtype):
            wide.append(None)
            continue
        combined = combine_wide(group.matrix, weights, group.flat.dtype)
        wide.append(combined)
        ok = ok and bool(all_finite([combined]))
    if not bool(agree(torch.tensor([ok])).all()):
        return False
    for group, backend, scratch in zip(buffers.groups, kernels, wide):

        def combine(beta: float, g: GradBuffer = group, k: Backend = backend, c: Tensor | None = scratch) -> None:
            if c is not None:
                if beta == 0.0:
                    g.flat.copy_(c)
                else:
                    g.flat.add_(c)
            elif g.matrix.dtype == g.flat.dtype:
                k.combine_into(g.flat, g.matrix, weights, beta=beta)
            else:
                combine_upcast(g.flat, g.matrix, weights, beta=beta)

        write_shared(group, combine)
    return True


def _fits(weights: Tensor, norms: Tensor, dtype: torch.dtype) -> bool:
    """Whether ``wᵀ·J`` is safe in ``dtype``: the weights within its range (neither overflow
    nor flush to zero there) and the bound Σ_t |w_t|·‖g_t‖ on every partial sum within its
    maximum (float64 J: always)."""
    if dtype == torch.float64:
        return True
    info = torch.finfo(dtype)
    # T numbers on the host: plain floats, not a chain of tiny tensor ops on every step.
    magnitudes = [abs(w) for w in weights.tolist()]
    if any(m > info.max or 0.0 < m < info.tiny for m in magnitudes):
        return False
    return sum(m * n for m, n in zip(magnitudes, norms.tolist())) <= info.max


class GramPath(PerTaskGradientPath):
    """Weights from G; ``wᵀ·J`` by the backend's combine kernel, per layout group."""

    def __init__(self, method: Method) -> None:
        assert isinstance(method, GramMethod)
        self.method = method

    def combine(
        self, ctx: StepContext, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> tuple[Tensor, None]:
        assert host.gram is not None
        weights = self.method.weights(host.gram, losses=host.losses) * scale
        norms = host.gram.diagonal().clamp(min=0).sqrt()
        if not write_combination(buffers, kernels, weights, norms, ctx.reducer.agree_weights):
            raise CombinationOverflow
        return weights, None


class MatrixPath(PerTaskGradientPath):
    """The method combines J itself (no weights); one layout group only."""

    handles_groups = False

    def __init__(self, method: Method) -> None:
        assert isinstance(method, MatrixMethod)
        self.method = method

    def combine(
        self, ctx: StepContext, buffers: SharedBuffers, kernels: list[Backend], host: HostView, scale: float
    ) -> tuple[None, None]:
        group = buffers.groups[0]
        if host.inv_scale is not None:
            # The method's rule and state are for the true gradients: unscale J (scratch by
            # now), and scale the result back for the GradScaler, which unscales .grad.
            group.matrix.mul_(host.inv_scale)
            scale = scale / host.inv_scale
        write_shared(group, lambda beta: _combine_matrix(self.method, group, beta, scale))
        return None, None


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
