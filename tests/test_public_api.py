"""The declared public surface: ``__all__`` of gradsurg, gradsurg.methods and gradsurg.kernels
is the whole API; everything else is internal (a leading underscore)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gradsurg
from gradsurg import kernels, methods

#: The modules directly under gradsurg/ that users import; the rest are internal.
PUBLIC_MODULES = {"optim", "methods", "kernels", "integrations", "data", "report"}


def test_the_top_level_surface():
    assert set(gradsurg.__all__) == {
        "GradSurgery",
        "Method",
        "Options",
        "Replay",
        "SurgeryStats",
        "TraceStep",
        "__version__",
        "aggregate",
        "available_methods",
        "backward",
        "build_method",
        "get_method",
        "gramian",
        "kernels",
        "methods",
        "read_trace",
        "replay",
    }
    for name in gradsurg.__all__:
        obj = getattr(gradsurg, name)
        if callable(obj) or inspect.ismodule(obj):
            assert inspect.getdoc(obj), f"gradsurg.{name} has no docstring"


def test_every_module_outside_the_public_ones_is_internal():
    names = {info.name for info in pkgutil.iter_modules(gradsurg.__path__)}
    assert {n for n in names if not n.startswith("_")} == PUBLIC_MODULES


def test_methods_all_is_every_registered_class():
    registered = {methods.method_class(n).__name__ for n in methods.available_methods()}
    exported = {n for n in methods.__all__ if inspect.isclass(getattr(methods, n))}
    kinds = {"Method", "GramMethod", "MatrixMethod", "LossWeighting", "DoubleBackwardMethod"}
    assert exported == registered | kinds
    for name in registered:
        assert getattr(methods, name) is methods.method_class(getattr(methods, name).name)


def test_kernels_all():
    assert set(kernels.__all__) == {"BACKENDS", "Backend", "available_backends", "get_backend", "unavailable_reason"}


def test_no_module_getattr_and_every_exported_name_resolves():
    for module in (gradsurg, methods, kernels):
        assert "__getattr__" not in vars(module), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_public_functions_and_classes_are_documented():
    for module in (methods, kernels):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"
    optim = importlib.import_module("gradsurg.optim")
    for name, member in vars(optim.GradSurgery).items():  # its own, not torch.optim.Optimizer's
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
            assert inspect.getdoc(member), f"GradSurgery.{name} has no docstring"
