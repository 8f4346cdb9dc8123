"""Replay: every Gram method on the Gram matrices of a recorded run.

For a Gram method m with weights w_m = m(G) and the applied weights w, the updates are
d_m = w_mᵀJ and d = wᵀJ, and everything a comparison needs follows from G alone:

- ‖d_m − d‖² = (w_m − w)ᵀ G (w_m − w), so the relative deviation is ‖d_m − d‖ / ‖d‖; the
  deviation of the direction alone is ‖d_m/‖d_m‖ − d/‖d‖‖ = √(2 − 2 cos(d_m, d)), with
  cos(d_m, d) = w_mᵀ G w / (‖d_m‖ ‖d‖) (a method that only rescales, like ``mean`` against
  ``sum``, changes the length, not the direction);
- the cosine of d_m with task t's gradient is (G w_m)_t / (√G_tt · √(w_mᵀ G w_m));
- task t's share of d_m is |w_t|·√G_tt / Σ_s |w_s|·√G_ss (how much of the update's length
  comes from task t's gradient);
- d_m conflicts with task t when (G w_m)_t < 0.

The first replayed step is exact: m's weights on the recorded G are the weights
``GradSurgery(method=m)`` computes on the same gradients. Later steps are *m applied to this
run's gradients*: the run followed the applied method's updates, and a run trained with m
would have seen other gradients. Stateful methods (GradVac's targets, Nash-MTL's warm start,
…) are stepped in order, as in training.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._trace import TraceStep, read_trace
from .methods import GramMethod, Method, available_methods, build_method, method_class

__all__ = ["MethodReplay", "Replay", "gram_methods", "replay", "update_measures"]


def gram_methods() -> list[str]:
    """The registered methods that are functions of the Gram matrix (those replay can run)."""
    return [n for n in available_methods() if issubclass(method_class(n), GramMethod)]


@dataclass
class MethodReplay:
    """One method over the steps of a trace (one entry per step; NaN where it could not run).

    Attributes:
        method: its name.
        weights: per step, ``(T,)`` its weights.
        deviation: per step, ‖d_m − d‖ / ‖d‖ (d the applied update).
        direction: per step, ‖d_m/‖d_m‖ − d/‖d‖‖, the deviation of the direction alone.
        cosines: per step, ``(T,)`` each task's cosine with d_m.
        shares: per step, ``(T,)`` each task's share of d_m.
        conflicts: per step, how many tasks d_m conflicts with.
        notes: why a step could not run (by step number).
    """

    method: str
    weights: list[Tensor] = field(default_factory=list)
    deviation: list[float] = field(default_factory=list)
    direction: list[float] = field(default_factory=list)
    cosines: list[Tensor] = field(default_factory=list)
    shares: list[Tensor] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)


@dataclass
class Replay:
    """The replay of a trace.

    Attributes:
        steps: the trace's steps.
        applied: the applied update's measures (``method`` is the applied method's name).
        methods: method name → its :class:`MethodReplay`.
    """

    steps: list[TraceStep]
    applied: MethodReplay
    methods: dict[str, MethodReplay]

    def removes_conflicts(self, method: str) -> list[bool]:
        """Per step: whether the applied update conflicts with some task and ``method``'s
        does not."""
        mine = self.methods[method].conflicts
        return [a > 0 and m == 0 for a, m in zip(self.applied.conflicts, mine)]


def update_measures(gram: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, int, float]:
    """(cosines, shares, conflicts, ‖d‖²) of the update d = wᵀJ, from G alone."""
    gram = gram.to(torch.float64)
    w = weights.to(torch.float64)
    norms = gram.diagonal().clamp(min=0).sqrt()
    gw = gram @ w
    squared = float(w @ gw)
    length = math.sqrt(max(squared, 0.0))
    denominator = norms * length
    cosines = torch.where(denominator > 0, gw / torch.where(denominator > 0, denominator, 1.0), torch.zeros_like(gw))
    parts = w.abs() * norms
    total = float(parts.sum())
    shares = parts / total if total > 0 else torch.full_like(parts, 1.0 / len(parts))
    scale = float(norms.max()) * length if len(norms) else 0.0
    conflicts = int((gw < -1e-12 * scale).sum())  # below rounding of G's entries: not a conflict
    return cosines.clamp(-1.0, 1.0), shares, conflicts, squared


def _deviation(gram: Tensor, weights: Tensor, applied: Tensor, applied_squared: float) -> tuple[float, float]:
    """(‖d_m − d‖ / ‖d‖, ‖d_m/‖d_m‖ − d/‖d‖‖) from G."""
    w, a = weights.to(torch.float64), applied.to(torch.float64)
    diff = w - a
    squared = max(float(diff @ gram @ diff), 0.0)
    relative = math.sqrt(squared / applied_squared) if applied_squared > 0 else (0.0 if squared == 0 else math.inf)
    mine = max(float(w @ gram @ w), 0.0)
    if mine == 0 or applied_squared <= 0:
        return relative, 0.0 if mine == applied_squared == 0 else math.sqrt(2.0)
    cos = max(-1.0, min(1.0, float(w @ gram @ a) / math.sqrt(mine * applied_squared)))
    return relative, math.sqrt(max(2.0 - 2.0 * cos, 0.0))


def _build(name: str | Method, num_tasks: int) -> Method:
    if isinstance(name, Method):
        return copy.deepcopy(name)
    return build_method(name, num_tasks=num_tasks) if "num_tasks" in method_class(name).needs else build_method(name)


def replay(
    trace: str | os.PathLike | Sequence[TraceStep],
    methods: Iterable[str | Method] | None = None,
    *,
    progress: bool = False,
) -> Replay:
    """Run Gram methods on the recorded steps of a trace.

    Args:
        trace: a trace file (``GradSurgery(trace=...)``) or its steps (:func:`read_trace`).
        methods: method names or instances (a copy is stepped; the instance is untouched);
            default: every registered Gram method.
        progress: a progress bar over the steps (when tqdm is installed).

    Returns:
        A :class:`Replay`: per step and method, its weights, the relative deviation of its
        update from the applied one, each task's cosine with it and share of it, and its
        conflicts.

    Raises:
        ValueError: naming ``methods``: a method that is not a Gram method.
    """
    steps = list(trace) if not isinstance(trace, (str, os.PathLike)) else read_trace(trace)
    chosen = list(methods) if methods is not None else gram_methods()
    for m in chosen:
        cls = type(m) if isinstance(m, Method) else method_class(m)
        if not issubclass(cls, GramMethod):
            raise ValueError(
                f"methods: {getattr(m, 'name', m)!r} is not a Gram method; replay runs the methods "
                f"that are functions of G ({', '.join(gram_methods())})"
            )
    num_tasks = len(steps[0].tasks) if steps else 1
    instances = {(m.name if isinstance(m, Method) else m): _build(m, num_tasks) for m in chosen}
    task_sets = dict.fromkeys(instances)  # the tasks a stateful method's state is for
    applied = MethodReplay(steps[0].method if steps else "")
    results = {name: MethodReplay(name) for name in instances}
    iterator: Iterable[TraceStep] = steps
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # the bar is a nicety: without tqdm, no bar
            pass
        else:
            iterator = tqdm(steps, desc="replay", unit="step")
    for step in iterator:
        gram, losses = step.gram, step.losses
        weights = step.weights
        if not bool(torch.isfinite(weights).all()):
            # A method without weights (a matrix method) was applied: compare with the sum.
            weights = torch.ones_like(weights)
        cos, shares, conflicts, squared = update_measures(gram, weights)
        applied.weights.append(weights)
        applied.deviation.append(0.0)
        applied.direction.append(0.0)
        applied.cosines.append(cos)
        applied.shares.append(shares)
        applied.conflicts.append(conflicts)
        for name, method in instances.items():
            out = results[name]
            try:
                held = task_sets[name]
                if method.tied_to_num_tasks and held is not None and held != step.tasks:
                    raise ValueError(f"its state is for the tasks {list(held)}, this step has {list(step.tasks)}")
                assert isinstance(method, GramMethod)
                w = method.weights(gram, losses=losses)
                if step.reduction == "mean":
                    w = w / len(step.tasks)  # compared with the same reduction as the run's
                task_sets[name] = step.tasks
                method.after_step()
            except (ValueError, RuntimeError, FloatingPointError) as error:
                out.notes[step.step] = str(error).splitlines()[0] if str(error) else type(error).__name__
                nan = torch.full_like(weights, math.nan)
                out.weights.append(nan)
                out.deviation.append(math.nan)
                out.direction.append(math.nan)
                out.cosines.append(nan)
                out.shares.append(nan)
                out.conflicts.append(0)
                continue
            c, s, k, _ = update_measures(gram, w)
            out.weights.append(w)
            relative, direction = _deviation(gram, w, weights, squared)
            out.deviation.append(relative)
            out.direction.append(direction)
            out.cosines.append(c)
            out.shares.append(s)
            out.conflicts.append(k)
    return Replay(steps, applied, results)
