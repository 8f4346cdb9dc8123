"""The plan of one step: the losses, their names and weights, and which parameters they reach."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from .._dtensor import Sharding
from .._graph import LossReach, trace_loss
from .._losses import normalise_losses, normalise_task_weights

__all__ = ["StepPlan", "plan_step", "trainable_parameters"]


@dataclass(frozen=True)
class StepPlan:
    """What a step established before any gradient is computed.

    Attributes:
        names: task names (dict keys, or ``"0"``, ``"1"``, … for a list).
        scalars: the losses as 0-d tensors, in ``names`` order.
        alphas: the static task weights α_t.
        params: the wrapped optimizer's trainable parameters, in group order, then the leaf
            tensors outside it that a loss reaches (they get their ordinary gradient).
        reached: per task, the positions in ``params`` of the parameters its loss reaches.
        shared_idx: positions in ``params`` of the shared parameters.
        retain_graph: whether the caller wants the graph kept after the last backward.
        sharding: the FSDP2 shards among ``params`` (None without FSDP2).
        num_candidates: how many of ``params`` are the candidates (the optimizer's); the rest
            are leaves outside it.
    """

    names: list[str]
    scalars: list[Tensor]
    alphas: list[float]
    params: list[Tensor]
    reached: list[list[int]]
    shared_idx: list[int]
    retain_graph: bool
    sharding: Sharding | None = None
    num_candidates: int = -1

    def targets(self, positions: Sequence[int]) -> list[Tensor]:
        """What autograd differentiates for ``params[k]``: the parameter itself, or under FSDP2
        the unsharded parameter the forward pass used."""
        if self.sharding is None:
            return [self.params[k] for k in positions]
        return [
            self.sharding.target(self.params[k]) if id(self.params[k]) in self.sharding.handles else self.params[k]
            for k in positions
        ]

    def localize(self, positions: Sequence[int], grads: Sequence[Tensor | None]) -> list[Tensor | None]:
        """The gradients of ``targets(positions)`` as gradients of the parameters: under FSDP2,
        this rank's shard of their mean over the ranks; unchanged otherwise."""
        if self.sharding is None:
            return list(grads)
        params = [self.params[k] for k in positions]
        sharded = [id(p) in self.sharding.handles for p in params]
        local = self.sharding.localize(
            [p for p, s in zip(params, sharded) if s], [g for g, s in zip(grads, sharded) if s]
        )
        it = iter(local)
        return [next(it) if s else g for g, s in zip(grads, sharded)]

    @property
    def num_tasks(self) -> int:
        """T, the number of tasks."""
        return len(self.names)

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


def _task_order(names: list[str], reference: Sequence[str] | None) -> list[int] | None:
    """The permutation that puts ``names`` in the order of ``reference`` (the declared tasks,
    or the previous step's) when every name is in it (a dict built differently, or a subset of
    the declared tasks); None to keep them as they are."""
    if reference is None or list(reference) == names or not set(names) <= set(reference):
        return None
    where = {n: i for i, n in enumerate(names)}
    return [where[n] for n in reference if n in where]


def _check_visibility(names: list[str], traces: list[LossReach], shared_given: bool) -> None:
    """Refuse graphs whose shared parameters cannot be read off (see :mod:`gradsurg._graph`)."""
    for name, trace in zip(names, traces):
        if trace.hiding:
            raise ValueError(
                f"losses[{name!r}]: its graph passes through {trace.hiding[0]} (reentrant "
                "torch.utils.checkpoint), which hides the parameters it recomputes from "
                "torch.autograd.grad, so their per-task gradients cannot be taken; use "
                "checkpoint(..., use_reentrant=False) (Hugging Face: gradient_checkpointing_"
                "enable(gradient_checkpointing_kwargs={'use_reentrant': False}))"
            )
    if shared_given:
        return
    outputs: dict[object, tuple[str, set[int]]] = {}
    for name, trace in zip(names, traces):
        for node, used in trace.opaque.items():
            first = outputs.setdefault(node, (name, used))
            if first[1] != used:
                raise ValueError(
                    f"losses[{first[0]!r}] and losses[{name!r}] use different outputs of one "
                    f"{type(node).__name__} node (a torch.compile'd region or a custom autograd "
                    "Function), which hides which parameters each output depends on, so the "
                    "shared parameters cannot be read off the graph; pass shared=[...] (the "
                    "trunk's parameters), or compile the trunk and the task heads separately"
                )


def plan_step(
    losses: Sequence[Tensor] | Mapping[str, Tensor],
    task_weights: Sequence[float] | Mapping[str, float] | None,
    params: list[Tensor],
    shared: Sequence[Tensor] | None,
    *,
    retain_graph: bool = False,
    previous_names: Sequence[str] | None = None,
    sharding: Sharding | None = None,
    known_names: Sequence[str] | None = None,
) -> StepPlan:
    """Check the losses and find the shared parameters (those of ``params`` reached by two or
    more losses, read off the autograd graph, unless ``shared`` fixes them).

    Losses given as a dict with the same names as ``previous_names`` in another order are put
    in that order, so per-task state follows the task's name. Leaf tensors that require grad
    and are reached but are not in ``params`` are appended to the plan's ``params`` as
    task-specific (never shared) parameters. ``known_names`` are the names a dict of
    ``task_weights`` may name (default: these losses').

    Raises:
        TypeError, ValueError: bad ``losses`` or ``task_weights``, a loss that reaches none of
            ``params``, or a graph that hides which parameters a loss reaches. Nothing has been
            computed or changed.
    """
    names, scalars = normalise_losses(losses)
    order = _task_order(names, previous_names)
    if order is not None:
        names, scalars = [names[i] for i in order], [scalars[i] for i in order]
    alphas = normalise_task_weights(task_weights, names, known_names)
    num_candidates = len(params)
    index = {id(p): k for k, p in enumerate(params)}
    if sharding is not None:
        # A loss's graph reaches the unsharded parameters; they stand for their shards.
        index.update({id(h.target): index[key] for key, h in sharding.handles.items() if key in index})
    traces = [trace_loss(loss, index) for loss in scalars]
    _check_visibility(names, traces, shared is not None)
    params = list(params)
    for trace in traces:
        for leaf in trace.outside:
            if id(leaf) not in index:
                index[id(leaf)] = len(params)
                params.append(leaf)
    reached = [sorted(t.positions | {index[id(leaf)] for leaf in t.outside}) for t in traces]
    for name, t in zip(names, traces):
        if not t.positions:
            raise ValueError(f"losses[{name!r}]: reaches none of the wrapped optimizer's parameters")
    if shared is None:
        counts: dict[int, int] = {}
        for r in reached:
            for k in r:
                counts[k] = counts.get(k, 0) + 1
        shared_idx = [k for k in sorted(counts) if counts[k] >= 2 and k < num_candidates]
    else:
        shared_idx = [index[id(p)] for p in shared]
        # Declared shared parameters a task does not reach get a zero row segment.
        reached = [sorted(set(r) | set(shared_idx)) for r in reached]
    return StepPlan(names, scalars, alphas, params, reached, shared_idx, retain_graph, sharding, num_candidates)
