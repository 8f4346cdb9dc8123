"""The plan of one step: the losses, their names and weights, and which parameters they reach."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from ..graph import reached_parameters
from ..losses import normalise_losses, normalise_task_weights

__all__ = ["StepPlan", "plan_step", "trainable_parameters"]


@dataclass(frozen=True)
class StepPlan:
    """What a step established before any gradient is computed.

    Attributes:
        names: task names (dict keys, or ``"0"``, ``"1"``, … for a list).
        scalars: the losses as 0-d tensors, in ``names`` order.
        alphas: the static task weights α_t.
        params: the wrapped optimizer's trainable parameters, in group order.
        reached: per task, the positions in ``params`` of the parameters its loss reaches.
        shared_idx: positions in ``params`` of the shared parameters.
        retain_graph: whether the caller wants the graph kept after the last backward.
    """

    names: list[str]
    scalars: list[Tensor]
    alphas: list[float]
    params: list[Tensor]
    reached: list[list[int]]
    shared_idx: list[int]
    retain_graph: bool

    @property
    def num_tasks(self) -> int:
        """T, the number of losses."""
        return len(self.scalars)

    @property
    def shared(self) -> list[Tensor]:
        """The shared parameters, in buffer order."""
        return [self.params[k] for k in self.shared_idx]


def trainable_parameters(param_groups: Sequence[Mapping]) -> list[Tensor]:
    """The parameters of ``param_groups`` that require grad, each once, in group order."""
    params, seen = [], set()
    for group in param_groups:
        for p in group["params"]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def plan_step(
    losses: Sequence[Tensor] | Mapping[str, Tensor],
    task_weights: Sequence[float] | Mapping[str, float] | None,
    params: list[Tensor],
    shared: Sequence[Tensor] | None,
    *,
    retain_graph: bool = False,
) -> StepPlan:
    """Check the losses and find the shared parameters (those reached by two or more losses,
    read off the autograd graph, unless ``shared`` fixes them).

    Raises:
        TypeError, ValueError: bad ``losses`` or ``task_weights``, or a loss that reaches none of
            ``params``. Nothing has been computed or changed.
    """
    names, scalars = normalise_losses(losses)
    alphas = normalise_task_weights(task_weights, names)
    index = {id(p): k for k, p in enumerate(params)}
    reached = [sorted(reached_parameters(loss, index)) for loss in scalars]
    for name, r in zip(names, reached):
        if not r:
            raise ValueError(f"losses[{name!r}]: reaches none of the wrapped optimizer's parameters")
    if shared is None:
        counts: dict[int, int] = {}
        for r in reached:
            for k in r:
                counts[k] = counts.get(k, 0) + 1
        shared_idx = [k for k in sorted(counts) if counts[k] >= 2]
    else:
        shared_idx = [index[id(p)] for p in shared]
        # Declared shared parameters a task does not reach get a zero row segment.
        reached = [sorted(set(r) | set(shared_idx)) for r in reached]
    return StepPlan(names, scalars, alphas, params, reached, shared_idx, retain_graph)
