"""Representation-level surgery (``backward(losses, features=h)``)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .._graph import trace_loss
from .._stats import SurgeryStats, make_stats
from ..methods.base import GramMethod
from .capture import check_dense
from .context import StepContext
from .decide import all_finite, nonfinite_tasks
from .gram import to_host
from .loss_space import write_plain
from .plan import StepPlan
from .write import write_specific

__all__ = ["RepresentationPath"]


class RepresentationPath:
    """MGDA-UB of Sener & Koltun 2018, LibMTL's ``rep_grad``: the per-task gradients are taken
    with respect to the shared representation h, through the task heads only; the method weighs
    their Gram matrix; one backward of ``Σ_t w_t ∂(α_t L_t)/∂h`` goes through the trunk.

    It equals parameter-level surgery when the weights do not depend on G (``sum``, ``mean``),
    and for any Gram method when the trunk's Jacobian ∂h/∂θ has orthonormal rows (then
    ``J_θ J_θᵀ = I`` and both Gram matrices coincide) — h the shared parameter itself, or a linear
    layer on one unit-norm input. Otherwise it is MGDA-UB's approximation: the Gram matrix of
    the representation gradients stands in for that of the parameter gradients (T backward
    passes through the heads, one through the trunk, instead of T through everything).

    Which options combine with it is decided by :func:`gradsurg._options.check_backward`.
    """

    def __init__(self, features: Tensor) -> None:
        self.features = features

    def run(self, plan: StepPlan, ctx: StepContext, *, sync: bool = True) -> SurgeryStats | None:
        options = ctx.options
        method, name = options.method, options.method.name
        assert isinstance(method, GramMethod) and sync
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
        kernels = ctx.kernels(matrix.device)
        losses = torch.stack([v.detach().to(torch.float64) for v in plan.scalars])
        host = to_host(losses, [kernels.gram(matrix)], None, options.inv_scale())
        if specific and not bool(all_finite(specific.values())):
            host = replace(host, finite=torch.zeros_like(host.finite))
        scale = options.scale(plan.num_tasks)

        def skipped(finite: Tensor) -> SurgeryStats:
            bad = nonfinite_tasks(plan.names, finite, options.policy)
            if options.scaler_enabled:
                write_plain(plan, scale)
            return make_stats(plan.names, host.losses, host.gram, None, method=name, backend=kernels.name, nonfinite_tasks=bad)

        if not bool(host.finite.all()):
            return skipped(host.finite)
        assert host.gram is not None
        weights = method.weights(host.gram, losses=host.losses) * scale
        combined = (weights.to(matrix) @ matrix).view_as(h)
        trunk = torch.autograd.grad(
            h,
            plan.targets(upstream),
            grad_outputs=combined,
            # kept under a GradScaler for the plain gradient of an overflowing step
            retain_graph=plan.retain_graph or options.scaler_enabled,
            allow_unused=True,
        )
        if not bool(all_finite(g for g in trunk if g is not None)):
            # The representation's gradients were finite but the trunk's overflowed: every task
            # is named, nothing is written.
            return skipped(torch.zeros(plan.num_tasks, dtype=torch.bool))
        write_specific(plan.params, {k: g for k, g in zip(upstream, trunk) if g is not None}, 1.0)
        write_specific(plan.params, specific, scale)
        return make_stats(plan.names, host.losses, host.gram, weights, method=name, backend=kernels.name)
