"""A run's outputs: ``log.csv``, ``metrics.json``, the PNGs, and the Markdown tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from . import plots as mplots
from .checkpoint import jsonable

__all__ = ["comparison_table", "markdown_table", "pairs", "write_outputs"]


def pairs(tasks: list[str]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of the tasks (the cosine columns, in this order)."""
    return [(i, j) for i in range(len(tasks)) for j in range(i + 1, len(tasks))]


def _method_label(args) -> str:
    return "single task" if args.single_task is not None else args.method


def write_outputs(args, out: Path, history: dict, tasks: list[str], extra: dict) -> None:
    """``log.csv``, ``metrics.json``, ``loss_curves.png`` and (when there are cosines) ``cosine.png``."""
    header = (
        ["step"]
        + [f"loss_{t}" for t in tasks]
        + [f"weight_{t}" for t in tasks]
        + ["num_conflicts"]
        + [f"cos_{tasks[i]}__{tasks[j]}" for i, j in pairs(tasks)]
        + ["lr", "seconds"]
    )
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for row in history["log"]:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in header})
    metrics = {
        "config": {k: jsonable(v) for k, v in vars(args).items()},
        "tasks": tasks,
        "evals": history["evals"],
        "final": history["evals"][-1] if history["evals"] else None,
        **extra,
    }
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    train = {t: [(r["step"], r[f"loss_{t}"]) for r in history["log"]] for t in tasks}
    evals = {t: [(e["step"], e["tasks"][t]["loss"]) for e in history["evals"]] for t in tasks}
    mplots.plot_loss_curves(train, evals, out / "loss_curves.png")
    if not mplots.plot_cosine(cosine_series(history, tasks), out / "cosine.png", _method_label(args)):
        (out / "cosine.png").unlink(missing_ok=True)


def cosine_series(history: dict, tasks: list[str]) -> dict[str, list[tuple[int, float]]]:
    """``{"a vs b": [(step, cosine), ...]}`` of every task pair, from the log rows that have one."""
    out = {}
    for i, j in pairs(tasks):
        key = f"cos_{tasks[i]}__{tasks[j]}"
        out[f"{tasks[i]} vs {tasks[j]}"] = [(r["step"], r[key]) for r in history["log"] if r.get(key) is not None]
    return out


def _metric_cells(res: dict) -> str:
    return ", ".join(f"{k} {100 * v:.2f}" for k, v in res.items() if k not in ("loss", "example"))


def markdown_table(args, final: dict[str, dict], seconds_per_step: float) -> str:
    """The final metrics as a Markdown table (one row per task, percent for metrics)."""
    run = f"single-task {args.single_task}" if args.single_task else f"multi-task {args.method}"
    lines = ["| run | task | eval loss | metrics |", "| --- | --- | --- | --- |"]
    for task, res in final.items():
        lines.append(f"| {run} | {task} | {res['loss']:.4f} | {_metric_cells(res)} |")
    lines.append(f"\nseconds per step: {seconds_per_step:.3f}")
    return "\n".join(lines)


def comparison_table(runs: dict[str, dict]) -> str:
    """Runs side by side: one line per (task, metric), one column per run, in percent (losses as
    they are); ``runs`` maps a column label to a run's ``metrics.json`` contents."""
    labels = list(runs)
    first = runs[labels[0]]
    lines = ["| task | metric | " + " | ".join(labels) + " |", "| --- | --- |" + " ---: |" * len(labels)]
    for task in first["tasks"]:
        for key in first["final"]["tasks"][task]:
            if key == "example":
                continue
            scale, digits = (1.0, 4) if key == "loss" else (100.0, 2)
            name = "eval loss" if key == "loss" else key
            cells = [f"{scale * r['final']['tasks'][task][key]:.{digits}f}" for r in runs.values()]
            lines.append(f"| {task} | {name} | " + " | ".join(cells) + " |")
    cells = [f"{r['seconds_per_step']:.2f}" for r in runs.values()]
    lines.append("| all | s / step | " + " | ".join(cells) + " |")
    return "\n".join(lines)
