"""A Sphinx extension that writes the method catalogue from the registry at build time, so the
catalogue cannot drift from the code: one entry per registered method with its kind, the
properties its class declares, whether it keeps state, what it needs from the setup, and its
module's docstring (formula, paper, options, where it differs from TorchJD)."""

from __future__ import annotations

import inspect
from pathlib import Path

#: The properties a method class declares, and their letters in the table.
PROPERTIES = {"permutation_invariant": "P", "positively_homogeneous": "H", "linear_under_scaling": "L",
              "non_conflicting": "N", "strongly_stationary": "S"}  # fmt: skip
KINDS = ("GramMethod", "MatrixMethod", "LossWeighting", "DoubleBackwardMethod")


def _kind(cls) -> str:
    names = [base.__name__ for base in cls.__mro__]
    return next((k for k in KINDS if k in names), "?")


def _flag(cls, name: str) -> bool:
    value = getattr(cls, name, False)
    return bool(value) if not isinstance(value, property) else True


def catalogue_markdown() -> str:
    """The catalogue page, as MyST Markdown."""
    import gradsurg

    lines = [
        "# Method catalogue",
        "",
        "Generated from the registry (`gradsurg.available_methods()`) and the methods' docstrings",
        "when the site is built. *Kind* says how a step runs it: `GramMethod` weighs the T×T Gram",
        "matrix (replayable from a trace, distributable over shards), `MatrixMethod` combines J",
        "itself, `LossWeighting` weighs the losses (one backward), `DoubleBackwardMethod`",
        "differentiates through the task gradients. Properties, as the class declares them (each",
        "is tested over the registry): **P** permutation invariant, **H** positively homogeneous,",
        "**L** linear under scaling, **N** non-conflicting, **S** strongly stationary (Quinton &",
        "Rey 2024's definitions).",
        "",
        "| method | kind | state | per-task state | needs | properties |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    entries = []
    for name in gradsurg.available_methods():
        cls = gradsurg.methods.method_class(name)
        stateful = cls.stateful if not isinstance(cls.stateful, property) else "when configured"
        props = " ".join(letter for p, letter in PROPERTIES.items() if _flag(cls, p)) or "—"
        needs = ", ".join(sorted(cls.needs)) or "—"
        kind = _kind(cls).replace("Method", "").replace("Weighting", " weighting")
        lines.append(
            f"| [`{name}`](#method-{name.replace('_', '-')}) | {kind} | "
            f"{'yes' if stateful is True else 'no' if stateful is False else stateful} | "
            f"{'yes' if cls.tied_to_num_tasks else 'no'} | {needs} | {props} |"
        )
        module = inspect.getmodule(cls)
        doc = inspect.cleandoc(module.__doc__ or cls.__doc__ or "")
        entries += [
            f"({'method-' + name.replace('_', '-')})=",
            f"## `{name}`",
            "",
            f"`gradsurg.methods.{cls.__name__}`, a {_kind(cls)}.",
            "",
            "```{eval-rst}",
            f".. autoclass:: gradsurg.methods.{cls.__name__}",
            "   :no-index:",
            "   :members: weights",
            "```",
            "",
            "````text",
            doc,
            "````",
            "",
        ]
    return "\n".join([*lines, "", *entries])


def _write(app) -> None:
    out = Path(app.srcdir) / "methods.md"
    text = catalogue_markdown() + "\n"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def setup(app):
    """Register the catalogue writer (before the sources are read)."""
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "version": "1"}
