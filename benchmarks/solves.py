"""Milliseconds per ``GramMethod.weights`` call, for every registered Gram method and task count.

    python -m benchmarks.solves [--ts 4,16,64] [--methods mgda,upgrad] [--budget 0.3] [--no-compiled]

Each method solves its T×T problem on a fixed random Gram matrix: J of shape (T, 200), float64,
standard normal, with its first T/2 rows scaled by −0.3 (so half the tasks conflict with the other
half and the active-set solvers have real work to do), G = J Jᵀ, losses uniform in [0.5, 1.5].
A method is built with its default options (``get_method(name)``); methods that cannot be built
without training-setup arguments are skipped, as are non-Gram methods.

Timing is *process* CPU time (``time.process_time``) of a single thread
(``torch.set_num_threads(1)``): the solves are latency-bound host code, and on a shared machine
wall-clock time measures the neighbours. One warm-up call, then as many calls as fit in
``--budget`` seconds (at most 200); stateful methods are reset before the warm-up only, so they
time their steady state (GradVac's targets, Nash-MTL's step counter).

The solvers of mgda, sdmgrad, cagrad, nash_mtl, fairgrad (Wolfe's min-norm point, FairGrad's
Newton), upgrad, dualproj (the dual-cone NNLS), pcgrad and gradvac run in C++ when
``gradsurg._C`` is built; ``--no-compiled`` times their numpy code, the path without it.

The table marks each entry against the targets of issue 14 (≤ 1 ms at T = 16, ≤ 50 ms at
T = 64): ``ok`` or ``MISS``; other T are shown unmarked.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from gradsurg.methods.base import GramMethod
from gradsurg.methods.registry import available_methods, get_method

__all__ = ["TARGETS_MS", "gram_methods", "main", "measure", "random_problem", "table"]

#: Target ms per ``weights`` call, by number of tasks (issue 14, item 6).
TARGETS_MS = {16: 1.0, 64: 50.0}


def random_problem(num_tasks: int, seed: int = 0, dim: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, losses)`` of the benchmark: see the module docstring."""
    gen = torch.Generator().manual_seed(seed + num_tasks)
    jac = torch.randn(num_tasks, dim, generator=gen, dtype=torch.float64)
    jac[: num_tasks // 2] *= -0.3
    losses = torch.rand(num_tasks, generator=gen, dtype=torch.float64) + 0.5
    return jac @ jac.T, losses


def gram_methods(names: Sequence[str] | None = None) -> list[tuple[str, GramMethod]]:
    """``(name, method)`` for the registered Gram methods (default options), or those of ``names``."""
    out = []
    for name in names or available_methods():
        try:
            method = get_method(name)
        except (TypeError, ValueError):  # needs training-setup arguments (num_tasks, layer)
            continue
        if isinstance(method, GramMethod):
            out.append((name, method))
    return out


def measure(method: GramMethod, gram: torch.Tensor, losses: torch.Tensor, budget: float = 0.3) -> float:
    """Process-time milliseconds of one ``method.weights(gram, losses)`` call (see the module
    docstring for the protocol)."""
    method.reset()
    method.weights(gram, losses)
    calls = 0
    start = time.process_time()
    while True:
        method.weights(gram, losses)
        calls += 1
        elapsed = time.process_time() - start
        if elapsed > budget or calls >= 200:
            return elapsed / calls * 1e3


def table(ts: Sequence[int], names: Sequence[str] | None = None, budget: float = 0.3) -> list[dict[str, object]]:
    """One row per Gram method: ``{"method": name, T: ms, ...}`` for every T of ``ts``."""
    problems = {t: random_problem(t) for t in ts}
    rows: list[dict[str, object]] = []
    for name, method in gram_methods(names):
        row: dict[str, object] = {"method": name}
        for t in ts:
            row[t] = measure(method, *problems[t], budget=budget)
        rows.append(row)
    return rows


def _mark(num_tasks: int, ms: float) -> str:
    target = TARGETS_MS.get(num_tasks)
    if target is None:
        return ""
    return " ok" if ms <= target else " MISS"


def format_table(rows: list[dict[str, object]], ts: Sequence[int]) -> str:
    """The rows as a Markdown table, each entry marked against :data:`TARGETS_MS`."""
    head = "| method | " + " | ".join(f"T={t} (ms)" for t in ts) + " |"
    lines = [head, "|---|" + "---|" * len(ts)]
    for row in rows:
        cells = []
        for t in ts:
            ms = float(row[t])  # type: ignore[arg-type]
            cells.append(f"{ms:.3g}{_mark(t, ms)}")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """Command-line entry point: print (and return) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ts", default="4,16,64", help="comma-separated task counts")
    parser.add_argument("--methods", default="", help="comma-separated method names (default: all)")
    parser.add_argument("--budget", type=float, default=0.3, help="process seconds per entry")
    parser.add_argument(
        "--no-compiled", action="store_true", help="time the numpy solvers (as without gradsurg._C)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.no_compiled:
        from gradsurg.methods import _compiled

        _compiled.ENABLED = False
    ts = [int(t) for t in args.ts.split(",") if t]
    names = [n for n in args.methods.split(",") if n] or None
    text = format_table(table(ts, names, args.budget), ts)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
