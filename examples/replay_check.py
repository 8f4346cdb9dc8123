"""How well one run's Gram trace predicts what other methods do when trained.

    python -m examples.replay_check --trace benchmarks/results/four-task/multi-task_mean/seed0/trace.jsonl \\
        --results benchmarks/results/four-task --seed 0

The trace of a ``mean`` run of the four-task experiment (docs/results.md) is replayed with each
Gram method; its task weights, normalised to sum 1 and averaged over the steps, are set beside
the weights the same method logged when it was trained with the same seed
(``RESULTS/multi-task_<method>/seed<SEED>/log.csv``). On the first step both see the same
gradients, so they must agree; later, the trained run follows its own updates and sees other
gradients, so the columns measure how far one ordinary run's Grams predict the trained shares.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

if not __package__:  # run as a file: its relative imports cannot work, say how to run it
    sys.exit("run this script as a module, from the repository root: python -m examples.replay_check")

import torch

import gradsurg

__all__ = ["compare", "main", "trained_shares"]

#: The Gram methods of the four-task experiment whose trained weights are logged.
METHODS = ("mgda", "nash_mtl", "cagrad", "pcgrad", "upgrad")


def trained_shares(log: Path, tasks: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """(first step, mean over steps) of the logged task weights, each normalised to sum 1."""
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    per_step = []
    for row in rows:
        w = [abs(float(row[f"weight_{t}"])) for t in tasks]
        total = sum(w)
        per_step.append([v / total for v in w] if total > 0 else [float("nan")] * len(w))
    mean = [sum(s[k] for s in per_step) / len(per_step) for k in range(len(tasks))]
    return per_step[0], mean


def _normalised(weights: torch.Tensor) -> list[float]:
    w = weights.abs()
    return (w / w.sum()).tolist()


def compare(trace: Path, results: Path, seed: int, methods: tuple[str, ...] = METHODS) -> list[dict]:
    """Per method: replayed and trained task shares (first step and mean over steps)."""
    steps = gradsurg.read_trace(trace)
    tasks = steps[0].tasks
    replayed = gradsurg.replay(steps, list(methods))
    out = []
    for name in methods:
        weights = replayed.methods[name].weights
        first = _normalised(weights[0])
        mean = torch.tensor([_normalised(w) for w in weights]).mean(dim=0).tolist()
        log = results / f"multi-task_{name}" / f"seed{seed}" / "log.csv"
        trained_first, trained_mean = trained_shares(log, tasks) if log.is_file() else (None, None)
        out.append({"method": name, "tasks": tasks, "replayed_first": first, "replayed_mean": mean,
                    "trained_first": trained_first, "trained_mean": trained_mean})  # fmt: skip
    return out


def _cells(values: list[float] | None) -> str:
    return " / ".join(f"{100 * v:.1f}" for v in values) if values is not None else "—"


def main(argv: list[str] | None = None) -> list[dict]:
    """Print the table (Markdown); returns its rows."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", type=Path, required=True, help="the mean run's trace.jsonl")
    p.add_argument("--results", type=Path, required=True, help="the four-task results folder")
    p.add_argument("--seed", type=int, default=0, help="the seed of the trained runs to compare with")
    args = p.parse_args(argv)
    rows = compare(args.trace, args.results, args.seed)
    tasks = rows[0]["tasks"]
    print(f"task shares of the weights, % ({' / '.join(tasks)})\n")
    print("| method | step 1 replayed | step 1 trained | mean replayed | mean trained |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['method']} | {_cells(r['replayed_first'])} | {_cells(r['trained_first'])} | "
            f"{_cells(r['replayed_mean'])} | {_cells(r['trained_mean'])} |"
        )
    return rows


if __name__ == "__main__":
    main()
