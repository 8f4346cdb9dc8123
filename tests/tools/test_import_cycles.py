"""No import cycles among the modules of a package: benchmarks/ and gradsurg/.

Every ``import`` and ``from ... import`` of a module counts — at the top, inside functions (the
lazy imports that usually hide a cycle rather than remove it) and under ``if TYPE_CHECKING:``.
Relative imports are resolved within the package; imports of other packages are ignored. An
edge goes to the module named: ``from pkg import mod`` to ``pkg.mod`` when that is a module,
else (an attribute of ``pkg``) to ``pkg`` itself. Importing ``pkg.mod`` also runs
``pkg/__init__.py``, but that implicit edge is not counted: a package's ``__init__`` that
imports its own submodules is the usual layout, not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted name → file of every module under ``package_dir`` (a package is its ``__init__``)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join([package, *parts])] = path
    return names


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import reads from, its leading dots resolved."""
    if node.level == 0:
        return node.module or ""
    # A package's __init__ is its own anchor for one dot; a module's anchor is its package.
    anchor = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module → the package's modules it imports (see the module docstring for what counts)."""
    modules = module_names(package_dir, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        # ast.walk visits every node: imports in functions and TYPE_CHECKING blocks included.
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(name, path, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first search meets, one per edge back to a module on its path, each as
    ``[a, b, ..., a]``; [] when the graph has none. Deterministic: nodes and edges in sorted order."""
    done: set[str] = set()
    path: list[str] = []
    on_path: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        on_path[node] = len(path)
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                cycles.append([*path[on_path[target] :], target])
            elif target not in done:
                visit(target)
        path.pop()
        del on_path[node]
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return cycles


def assert_no_cycles(package_dir: Path, package: str) -> None:
    """Fail with every cycle found, one per line."""
    cycles = find_cycles(import_graph(package_dir, package))
    assert not cycles, f"import cycles in {package}:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_benchmarks_have_no_import_cycle():
    assert_no_cycles(ROOT / "benchmarks", "benchmarks")


def test_gradsurg_has_no_import_cycle():
    assert_no_cycles(ROOT / "gradsurg", "gradsurg")


def test_the_check_finds_cycles_through_lazy_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")  # __init__ → its submodule: not a cycle
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\nimport os\n"
    )
    (pkg / "c.py").write_text("from pkg import sub\nfrom pkg.sub.b import x\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.a"},
        "pkg.c": {"pkg.sub", "pkg.sub.b"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []
