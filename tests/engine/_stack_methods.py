"""Building any registered method for a small SharedTrunk model (tests/conftest.py)."""

from __future__ import annotations

import gradsurg

#: Options that make a method keep per-task state where it has an option for it.
STATEFUL_OPTIONS = {
    "nash_mtl": {"update_weights_every": 2},
    "stch": {"ideal": "running_min"},
    "pbi": {"ideal": "running_min"},
}


def build(name: str, model, num_tasks: int, *, stateful: bool = False) -> gradsurg.Method:
    """The method ``name`` for this setup (the task count and the trunk's last layer are passed
    to the methods that declare they need them)."""
    options = dict(STATEFUL_OPTIONS.get(name, {})) if stateful else {}
    return gradsurg.methods.build_method(name, num_tasks=num_tasks, layer=model.trunk[2].weight, **options)


def per_task_gradient_methods() -> list[str]:
    """Registered methods that work on the per-task gradients (Gram and matrix kinds)."""
    kinds = (gradsurg.methods.GramMethod, gradsurg.methods.MatrixMethod)
    return [n for n in gradsurg.available_methods() if issubclass(gradsurg.methods.method_class(n), kinds)]
