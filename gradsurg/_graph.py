"""Which parameters a loss reaches, read off its autograd graph without computing anything.

The walk follows ``grad_fn.next_functions`` down to the ``AccumulateGrad`` leaves. It sees
every parameter that eager autograd nodes take as an input. Two kinds of node hide part of that
picture, and the walk reports them rather than guessing:

- an *opaque multi-output* node — a custom ``torch.autograd.Function``, such as the one
  ``torch.compile`` puts around a compiled region (``CompiledFunctionBackward``) — lists all
  its parameter inputs as children of every output, so two losses that use different outputs
  (a compiled model returning both heads) both seem to reach both heads;
- a *hiding* node — reentrant ``torch.utils.checkpoint`` (``CheckpointFunctionBackward``) —
  recomputes its region inside its own backward, so the parameters it uses are not in the
  graph at all, and ``torch.autograd.grad`` cannot reach them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["LossReach", "reached_parameters", "trace_loss"]

#: Autograd nodes whose backward re-runs a forward that autograd.grad cannot see into.
_HIDING_NODES = ("CheckpointFunctionBackward",)
#: Custom functions whose output k depends on their input k alone (DDP's sink, which
#: ``find_unused_parameters=True`` puts after the model's outputs).
_PASS_THROUGH = ("_DDPSinkBackward",)


@dataclass
class LossReach:
    """What one loss's graph shows.

    Attributes:
        positions: positions (per the index) of the candidate parameters the loss reaches.
        outside: leaf tensors that require grad, reached by the loss but not in the index
            (parameters of another optimizer, say), in the order they were met.
        opaque: for every custom-function node with several outputs, the outputs the loss
            uses (``node → set of output numbers``).
        hiding: names of the nodes met that hide the parameters they use.
    """

    positions: set[int] = field(default_factory=set)
    outside: list[Tensor] = field(default_factory=list)
    opaque: dict[object, set[int]] = field(default_factory=dict)
    hiding: list[str] = field(default_factory=list)


def _is_custom_function(node: object) -> bool:
    return isinstance(node, torch.autograd.function.BackwardCFunction)


def trace_loss(loss: Tensor, index: Mapping[int, int]) -> LossReach:
    """Walk ``loss``'s autograd graph (``index`` maps ``id(param) → position``)."""
    reach = LossReach()
    if loss.grad_fn is None:
        # A leaf loss reaches only itself.
        position = index.get(id(loss))
        if position is not None:
            reach.positions.add(position)
        elif loss.requires_grad:
            reach.outside.append(loss)
        return reach
    outside_ids: set[int] = set()
    seen: set[object] = set()
    stack: list[tuple[object, int]] = [(loss.grad_fn, loss.output_nr)]
    while stack:
        node, output_nr = stack.pop()
        if node is None:
            continue
        name = type(node).__name__
        if name in _PASS_THROUGH:
            children = node.next_functions  # type: ignore[attr-defined]
            if output_nr < len(children):
                stack.append(children[output_nr])
                continue
        if _is_custom_function(node):
            reach.opaque.setdefault(node, set()).add(output_nr)
        if node in seen:
            continue
        seen.add(node)
        if name in _HIDING_NODES:
            reach.hiding.append(name)
        variable = getattr(node, "variable", None)
        if variable is not None:
            position = index.get(id(variable))
            if position is not None:
                reach.positions.add(position)
            elif id(variable) not in outside_ids:
                outside_ids.add(id(variable))
                reach.outside.append(variable)
        stack.extend(node.next_functions)  # type: ignore[attr-defined]  # (child, which output of it feeds us)
    return reach


def reached_parameters(loss: Tensor, index: Mapping[int, int]) -> set[int]:
    """Positions (per ``index``: ``id(param) → position``) of the parameters ``loss`` reaches."""
    return trace_loss(loss, index).positions
