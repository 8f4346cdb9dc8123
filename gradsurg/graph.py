"""Which parameters a loss reaches, read off its autograd graph without computing anything."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["reached_parameters"]


def reached_parameters(loss: Tensor, index: Mapping[int, int]) -> set[int]:
    """Indices (per ``index``: ``id(param) → position``) of the parameters ``loss`` depends on.

    Walks ``grad_fn.next_functions`` down to the ``AccumulateGrad`` leaves. This is how shared
    parameters are found before any gradient is computed, so that every task's gradient can be
    written straight into its row of J.
    """
    if loss.grad_fn is None:
        # A leaf loss reaches only itself.
        position = index.get(id(loss))
        return set() if position is None else {position}
    found: set[int] = set()
    seen = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            position = index.get(id(variable))
            if position is not None:
                found.add(position)
        stack.extend(child for child, _ in node.next_functions)
    return found
