"""The loss-space paths: one objective from the losses, one backward, ordinary gradients for
every parameter it reaches (loss weightings; the double-backward regulariser)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from .._stats import SurgeryStats, make_stats
from ..methods.base import DoubleBackwardMethod, LossWeighting, Method
from .capture import check_dense
from .context import StepContext
from .decide import all_finite, nonfinite_tasks
from .gram import to_host
from .plan import StepPlan
from .write import write_specific

__all__ = ["DoubleBackwardPath", "LossPath", "write_plain"]


class LossPath:
    """A loss weighting's path: ``objective(losses)``, one backward."""

    #: Whether :meth:`adjust` differentiates the graph again (it is then kept for it).
    keeps_graph = False

    def __init__(self, method: Method) -> None:
        self.method = method

    def objective(self, scaled: Tensor, plan: StepPlan) -> tuple[Tensor, Tensor | None]:
        """The scalar to differentiate and the Gram matrix for the stats (None here)."""
        assert isinstance(self.method, LossWeighting)
        return self.method.objective(scaled), None

    def adjust(self, plan: StepPlan, specific: dict[int, Tensor]) -> dict[int, Tensor]:
        """A last look at the gradients before they are written (none by default)."""
        return specific

    def run(self, plan: StepPlan, ctx: StepContext, *, sync: bool = True) -> SurgeryStats | None:
        options, reducer, method = ctx.options, ctx.reducer, self.method
        name = options.method.name
        inv_scale = options.inv_scale()
        losses = torch.stack([loss.detach().to(torch.float64) for loss in plan.scalars])
        if reducer.exact:
            reducer.mean_([losses])  # the global batch's losses: the weights are the same everywhere
        host = to_host(losses, [], None, inv_scale)
        host = replace(host, finite=reducer.agree(host.finite))
        # Non-finite losses are decided before the method sees them: loss-space methods keep
        # loss histories and take logarithms, which a NaN would poison.
        bad = nonfinite_tasks(plan.names, host.finite, options.policy)
        if bad:
            if options.scaler_enabled:
                write_plain(plan, options.scale(plan.num_tasks))
            return make_stats(plan.names, host.losses, None, None, method=name, backend="torch", nonfinite_tasks=bad)
        local = torch.stack(list(plan.scalars))
        if reducer.world_size > 1 and reducer.exact:
            # Values of the global losses, gradients of the local ones: averaged over the ranks,
            # the gradients are those of the objective of the global batch.
            local = local + (losses.to(local) - local).detach()
        scaled = local * torch.tensor(plan.alphas, dtype=local.dtype, device=local.device)
        if inv_scale is not None:
            # The method sees the true losses; the objective is scaled back for the GradScaler.
            objective, gram = self.objective(scaled * inv_scale, plan)
            objective = objective / inv_scale
        else:
            objective, gram = self.objective(scaled, plan)
        # Learnable method parameters created lazily (at the first objective) join the caller's
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
        scale = options.scale(plan.num_tasks)
        everywhere_finite = reducer.agree(all_finite([*specific.values(), *fresh_grads]).reshape(1).cpu())
        if not bool(everywhere_finite.all()):
            # Name the tasks whose gradient norm is non-finite; if none is, the objective itself
            # overflowed and every task is named.
            finite = (
                torch.isfinite(gram.diagonal()) if gram is not None else torch.ones(plan.num_tasks, dtype=torch.bool)
            )
            if finite.all():
                finite = torch.zeros_like(finite)
            bad = nonfinite_tasks(plan.names, finite, options.policy)
            if options.scaler_enabled:
                write_specific(params, specific, scale)
            return make_stats(plan.names, host.losses, gram, None, method=name, backend="torch", nonfinite_tasks=bad)
        write_specific(params, specific, scale)
        if fresh:
            if ctx.add_parameters is not None:
                ctx.add_parameters(fresh)
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


def write_plain(plan: StepPlan, scale: float) -> None:
    """Overflow under a GradScaler: the gradient of Σ α_t L_t, infs included, as plain PyTorch
    would write it, so that the scaler skips the step and backs off."""
    total = torch.stack([loss * alpha for loss, alpha in zip(plan.scalars, plan.alphas)]).sum()
    positions = sorted(set().union(*plan.reached))
    grads: Sequence[Tensor | None] = torch.autograd.grad(
        total, plan.targets(positions), retain_graph=plan.retain_graph, allow_unused=True
    )
    grads = plan.localize(positions, grads)
    write_specific(plan.params, {k: g for k, g in zip(positions, grads) if g is not None}, scale)


class DoubleBackwardPath(LossPath):
    """The objective differentiates through the task gradients of the shared parameters."""

    def objective(self, scaled: Tensor, plan: StepPlan) -> tuple[Tensor, Tensor | None]:
        assert isinstance(self.method, DoubleBackwardMethod)
        objective, gram = self.method.objective(scaled, plan.shared)
        return objective, gram.detach().to(device="cpu", dtype=torch.float64)
