#!/usr/bin/env python
"""Run the multi-task comparison over seeds and write its tables as Markdown (OUT/results.md).

Trains, with the same data subsets, steps, batch size and seeds, each row of :func:`rows`:
every task alone (the single-task baselines), the multi-task ``sum`` and ``mean`` of the losses,
the surgery methods (pcgrad, cagrad, mgda, upgrad, nash_mtl, famo, cosreg), two cheaper
variants (task weights refreshed every 4 steps) and representation-level MGDA (``--features``)
— each row a subprocess of
``python -m examples.train_glue_summarization`` — then tabulates per-task metrics (accuracy;
F1 too for MRPC; ROUGE-1/2/L), Δm% against the single-task rows (:mod:`examples.mtl.aggregate`),
seconds per step and peak memory, as mean ± sample std over seeds, the paired differences
from ``mean`` seed by seed, and per task pair the measured gradient cosines and how often the
pair conflicts (from each run's log.csv).

    python -m examples.run_comparison --setup four --seeds 0,1,2       # SmolLM2-135M + LoRA
    python -m examples.run_comparison --preset tiny --steps 10 --out /tmp/cmp   # a smoke run

Setups: ``two`` (SST-2 + AESLC) and ``four`` (SST-2, MRPC, RTE + AESLC). A long comparison can
be spread over sittings: ``--only`` picks rows (by index or label), every (row, seed) gets its
own folder ``OUT/<row>/seed<k>``, and ``--collect`` trains nothing and tabulates every seed found
there (the ``n`` column says how many).

Nothing is tuned on the reported rows: every run uses the script's defaults plus the budget
flags below; the validation rows reported are never used for any choice. The two learning rates
(LoRA 1e-3, heads 3e-3, against the script's 2e-4 everywhere) were chosen at this budget on
held-out *training* rows (``--eval-split heldout-train``): in 30 steps the script's 2e-4 leaves
SST-2 at chance and AESLC's ROUGE-1 at half of what 1e-3 reaches.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: its relative imports cannot work, say how to run it
    sys.exit("run this script as a module, from the repository root: python -m examples.run_comparison")

from .mtl.aggregate import Criterion, delta_m, format_mean_std, pair_statistics, paired_differences

HERE = Path(__file__).resolve().parent
SCRIPT_MODULE = "examples.train_glue_summarization"

#: The task sets: GLUE tasks and the summarization set.
SETUPS = {
    "two": (("sst2",), "aeslc"),
    "four": (("sst2", "mrpc", "rte"), "aeslc"),
}

#: Multi-task rows after the single-task ones: (label, flags).
MULTI_TASK_ROWS = (
    ("multi-task sum", ["--method", "sum"]),
    ("multi-task mean", ["--method", "mean"]),
    ("multi-task pcgrad", ["--method", "pcgrad"]),
    ("multi-task cagrad", ["--method", "cagrad"]),
    ("multi-task mgda", ["--method", "mgda"]),
    ("multi-task upgrad", ["--method", "upgrad"]),
    ("multi-task nash_mtl", ["--method", "nash_mtl"]),
    ("multi-task famo", ["--method", "famo"]),
    ("multi-task cosreg (arXiv:2412.06249)", ["--method", "cosreg"]),
    ("multi-task pcgrad, refresh every 4", ["--method", "pcgrad", "--refresh-every", "4"]),
    ("multi-task upgrad, refresh every 4", ["--method", "upgrad", "--refresh-every", "4"]),
    # Representation level (MGDA-UB): the tasks' rows are disjoint, so the task gradients of the
    # shared representation are orthogonal; MGDA then weighs the tasks by 1/||g_t||².
    ("multi-task mgda, features", ["--method", "mgda", "--features"]),
)

#: The row the paired differences are taken from.
REFERENCE_ROW = "multi-task mean"


def rows(setup: str) -> list[tuple[str, list[str]]]:
    """Every row of ``setup``: one single-task row per task, then :data:`MULTI_TASK_ROWS`."""
    glue, summarization = SETUPS[setup]
    return [(f"single-task {t}", ["--single-task", t]) for t in (*glue, summarization)] + list(MULTI_TASK_ROWS)


def columns(setup: str) -> list[tuple[str, str, str]]:
    """The metric columns of ``setup``: (header, task, metric key)."""
    glue, summarization = SETUPS[setup]
    out = []
    for t in glue:
        out.append((f"{t} acc", t, "accuracy"))
        if t in ("mrpc", "qqp"):
            out.append((f"{t} F1", t, "f1"))
    out += [(f"{summarization} R-1", summarization, "rouge1"), ("R-2", summarization, "rouge2"),
            ("R-L", summarization, "rougeL")]  # fmt: skip
    return out


def criteria(setup: str) -> list[Criterion]:
    """Δm's criteria: each metric column, MRPC by its F1 only (accuracy and F1 of one task
    measure the same predictions), ROUGE-1/2/L averaged within their task."""
    cols = columns(setup)
    return [Criterion(t, k) for _, t, k in cols if not (k == "accuracy" and (t, "f1") in {(c[1], c[2]) for c in cols})]


def budget_flags(args: argparse.Namespace) -> list[str]:
    """The flags every run shares (data, budget, head learning rate), without the seed."""
    glue, summarization = SETUPS[args.setup]
    flags = [
        "--preset", args.preset, "--glue", ",".join(glue), "--summarization", summarization,
        "--steps", str(args.steps), "--eval-every", str(args.steps),
        "--batch-size", str(args.batch_size), "--max-train", str(args.max_train),
        "--max-eval", str(args.max_eval), "--max-source-len", str(args.max_source_len),
        "--max-target-len", str(args.max_target_len), "--eval-batch-size", str(args.eval_batch_size),
        "--quiet",
    ]  # fmt: skip
    if args.lr is not None:
        flags += ["--lr", str(args.lr)]
    if args.head_lr is not None:
        flags += ["--task-lr", f"cls={args.head_lr}"]
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    return flags


def run_dir(out: Path, label: str, seed: int) -> Path:
    """The folder of one (row, seed) run."""
    name = label.split(" (")[0].replace(", ", "_").replace(" ", "_")
    return out / name / f"seed{seed}"


def run(label: str, flags: list[str], seed: int, args: argparse.Namespace) -> dict:
    """Train one configuration and seed in a subprocess; returns its final metrics and timings."""
    out = run_dir(args.out, label, seed)
    command = [sys.executable, "-m", SCRIPT_MODULE, *budget_flags(args), "--seed", str(seed), *flags,
               "--output-dir", str(out)]  # fmt: skip
    print(f"== {label}, seed {seed}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=HERE.parent)
    wall = time.perf_counter() - start
    # The wall time (model loading and evaluation included) is only known out here; keep it
    # beside the run's own metrics so that --collect can tabulate it later.
    (out / "runner.json").write_text(json.dumps({"label": label, "seed": seed, "wall": wall}))
    return load(out, label, flags)


def load(out: Path, label: str, flags: list[str]) -> dict:
    """One finished run read back from its folder."""
    metrics = json.loads((out / "metrics.json").read_text())
    wall = json.loads((out / "runner.json").read_text())["wall"]
    return {"label": label, "flags": flags, "seed": metrics["config"]["seed"], "wall": wall, "metrics": metrics,
            "cosines": read_cosines(out / "log.csv")}  # fmt: skip


def read_cosines(log: Path) -> dict[str, list[float | None]]:
    """The per-step task-gradient cosines of a run's log.csv, by pair (``a__b``); empty for a
    run that logs none (single-task runs, loss-space methods)."""
    if not log.is_file():
        return {}
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    pairs = [k.removeprefix("cos_") for k in (rows[0] if rows else {}) if k.startswith("cos_")]
    return {p: [float(r[f"cos_{p}"]) if r[f"cos_{p}"] not in ("", "None") else None for r in rows] for p in pairs}


def collect(label: str, flags: list[str], args: argparse.Namespace) -> list[dict]:
    """Every finished seed of one row under ``--out`` whose budget matches this invocation's."""
    found = []
    for seed in args.seeds:
        out = run_dir(args.out, label, seed)
        if (out / "metrics.json").is_file() and (out / "runner.json").is_file():
            result = load(out, label, flags)
            config = result["metrics"]["config"]
            glue, summarization = SETUPS[args.setup]
            heads = set(config["task_lr"].values())  # empty for a run without classification heads
            budget = (config["steps"], config["max_eval"], config["batch_size"], config["glue"], config["summarization"],
                      config["max_source_len"], config["max_target_len"], config["lr"], heads)
            wanted = (args.steps, args.max_eval, args.batch_size, list(glue), summarization, args.max_source_len,
                      args.max_target_len, config["lr"] if args.lr is None else args.lr,
                      heads if args.head_lr is None or not heads else {args.head_lr})  # fmt: skip
            if budget != wanted:
                raise SystemExit(f"--collect: {out} was trained with another budget or setup than this call's")
            found.append(result)
    return found


def _final(result: dict) -> dict[str, dict[str, float]]:
    return result["metrics"]["final"]["tasks"]


def single_task_reference(table_rows: list[list[dict]]) -> dict[str, dict[str, float]]:
    """Each task's metrics from its single-task row, averaged over that row's seeds."""
    reference: dict[str, dict[str, float]] = {}
    for results in table_rows:
        if not results or not results[0]["label"].startswith("single-task "):
            continue
        task = results[0]["label"].removeprefix("single-task ")
        keys = [k for k in _final(results[0])[task] if k != "example"]
        reference[task] = {k: sum(_final(r)[task][k] for r in results) / len(results) for k in keys}
    return reference


def delta_m_by_seed(results: list[dict], reference: dict, crit: list[Criterion]) -> dict[int, float]:
    """Δm% of each seed of a multi-task row (empty when a single-task reference is missing)."""
    if not results or any(c.task not in reference for c in crit) or results[0]["label"].startswith("single-task"):
        return {}
    return {r["seed"]: delta_m(_final(r), reference, crit) for r in results}


def _values(results: list[dict], task: str, key: str) -> dict[int, float]:
    return {r["seed"]: _final(r)[task][key] for r in results if key in _final(r).get(task, {})}


def table(table_rows: list[list[dict]], setup: str) -> str:
    """The main table: one line per row, mean ± std over its seeds."""
    cols, crit = columns(setup), criteria(setup)
    reference = single_task_reference(table_rows)
    header = ["run", "n", *(c[0] for c in cols), "Δm%", "s / step", "peak MiB", "wall (s)"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for results in table_rows:
        if not results:
            continue
        cells = [results[0]["label"], str(len(results))]
        for _, task, key in cols:
            cells.append(format_mean_std(list(_values(results, task, key).values()), scale=100.0))
        cells.append(format_mean_std(list(delta_m_by_seed(results, reference, crit).values()), signed=True))
        cells.append(format_mean_std([r["metrics"]["seconds_per_step"] for r in results]))
        cells.append(format_mean_std([r["metrics"].get("peak_memory_mb") for r in results
                                      if r["metrics"].get("peak_memory_mb") is not None], digits=0))  # fmt: skip
        cells.append(format_mean_std([r["wall"] for r in results], digits=0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(table_rows: list[list[dict]], setup: str) -> str:
    """Paired differences from :data:`REFERENCE_ROW`, seed by seed (mean ± std; n = common seeds),
    in points (metrics ×100) and in Δm% points."""
    cols, crit = columns(setup), criteria(setup)
    reference = single_task_reference(table_rows)
    base = next((r for r in table_rows if r and r[0]["label"] == REFERENCE_ROW), None)
    if base is None:
        return f"(no paired differences: the row {REFERENCE_ROW!r} has no finished seed)"
    base_dm = delta_m_by_seed(base, reference, crit)
    header = ["run − mean", "n", *(c[0] for c in cols), "Δm%"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for results in table_rows:
        if not results or results is base or results[0]["label"].startswith("single-task"):
            continue
        common = sorted({r["seed"] for r in results} & {r["seed"] for r in base})
        cells = [results[0]["label"], str(len(common))]
        for _, task, key in cols:
            diffs = paired_differences(_values(results, task, key), _values(base, task, key))
            cells.append(format_mean_std(diffs, scale=100.0, signed=True))
        dm = paired_differences(delta_m_by_seed(results, reference, crit), base_dm)
        cells.append(format_mean_std(dm, signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cosine_table(table_rows: list[list[dict]]) -> str:
    """Per task pair, the gradient cosines each multi-task row measured on the shared parameters:
    mean cosine and its range over all steps of all seeds, and the fraction of steps where the
    pair conflicts (cosine < 0), mean ± std over seeds."""
    header = ["run", "pair", "mean cos", "range", "conflict %", "steps"]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for results in table_rows:
        pairs = results[0].get("cosines", {}) if results else {}
        for pair in pairs:
            series = [r.get("cosines", {}).get(pair, []) for r in results]
            per_seed = [s for s in map(pair_statistics, series) if s is not None]
            pooled = pair_statistics([c for cosines in series for c in cosines])
            if pooled is None:
                continue
            cells = [results[0]["label"], pair.replace("__", " / "), f"{pooled.mean:+.3f}",
                     f"[{pooled.low:+.3f}, {pooled.high:+.3f}]",
                     format_mean_std([s.conflict_fraction for s in per_seed], scale=100.0, digits=0),
                     str(pooled.steps)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return "(no run logged task-gradient cosines)"
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: comma-separated non-negative integers."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds, got {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    """The runner's flags (the budget every row shares, the rows, the seeds, the folders)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", choices=tuple(SETUPS), default="two", help="task set: two (SST-2 + AESLC) or four")
    p.add_argument("--preset", default="smollm2", choices=("tiny", "smollm2"), help="backbone")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    p.add_argument("--batch-size", type=int, default=4, help="rows per task per step")
    p.add_argument("--max-train", type=int, default=500, help="training rows per task")
    p.add_argument("--max-eval", type=int, default=100, help="validation rows per task")
    p.add_argument("--max-source-len", type=int, default=48, help="source tokens")
    p.add_argument("--max-target-len", type=int, default=12, help="summary tokens")
    p.add_argument("--eval-batch-size", type=int, default=50, help="rows per evaluation batch (generation is batched)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate of the shared LoRA parameters; 0 or less keeps the script's --lr")
    p.add_argument("--head-lr", type=float, default=3e-3,
                   help="learning rate of the classification heads; "
                   "0 or less keeps the script's default")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of every run (default: the script's, all cores); with 1, two runners "
                   "on disjoint --only rows share a 2-core machine well")  # fmt: skip
    p.add_argument("--seeds", type=parse_seeds, default=[0], help="comma-separated seeds")
    p.add_argument("--out", type=Path, default=Path("runs/comparison"), help="run folders")
    p.add_argument("--results", type=Path, default=None,
                   help="Markdown file to write (default OUT/results.md; docs/results.md quotes the four-task one)")
    p.add_argument("--only", default=None, help="comma-separated rows to run: 0-based indices or labels")
    p.add_argument("--collect", action="store_true", help="train nothing; tabulate the seeds already in --out")
    return p


def _chosen(only: str | None, all_rows: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """The rows ``--only`` names (all by default); raises ValueError for an unknown one."""
    if only is None:
        return all_rows
    labels = {label: (label, flags) for label, flags in all_rows}
    out = []
    for item in (s.strip() for s in only.split(",")):
        if item.isdigit() and int(item) < len(all_rows):
            out.append(all_rows[int(item)])
        elif item in labels:
            out.append(labels[item])
        else:
            raise ValueError(item)
    return out


def main(argv: list[str] | None = None) -> list[list[dict]]:
    """Run (or ``--collect``) the rows, print the tables, write ``--results``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.head_lr is not None and args.head_lr <= 0:
        args.head_lr = None
    if args.lr is not None and args.lr <= 0:
        args.lr = None
    if args.results is None:
        args.results = args.out / "results.md"
    all_rows = rows(args.setup)
    try:
        chosen = _chosen(args.only, all_rows)
    except ValueError as exc:
        parser.error(f"--only: unknown row {exc}; rows: 0..{len(all_rows) - 1} or {[label for label, _ in all_rows]}")
    if args.collect:
        found = [collect(label, flags, args) for label, flags in chosen]
    else:
        found = [[run(label, flags, seed, args) for seed in args.seeds] for label, flags in chosen]
    main_table, paired = table(found, args.setup), paired_table(found, args.setup)
    cosines = cosine_table(found)
    print(main_table, paired, cosines, sep="\n\n")
    commands = "\n".join(
        f"python -m {SCRIPT_MODULE} {shlex.join([*budget_flags(args), '--seed', 'SEED', *flags])}" for _, flags in chosen
    )
    glue, summarization = SETUPS[args.setup]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        f"# Results: {', '.join(glue)} classification + {summarization} summarization on one shared backbone\n\n"
        f"Produced by `python -m examples.run_comparison {shlex.join(argv if argv is not None else sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d')}, torch threads per run = {args.threads or 'all cores'}). "
        "Values are mean ± sample standard deviation over the `n` seeds; metrics in percent. "
        "Δm% is the mean over tasks of the relative change from the single-task rows "
        "(examples/mtl/aggregate.py; MRPC by F1, AESLC by the mean of ROUGE-1/2/L).\n\n"
        f"{main_table}\n\nPaired differences from `{REFERENCE_ROW}`, seed by seed "
        f"(points; n = seeds both rows have):\n\n{paired}\n\n"
        f"Task-gradient cosines on the shared parameters, per pair (all steps of all seeds; "
        f"conflict % = steps with cosine < 0, mean ± std over seeds):\n\n{cosines}\n\n"
        f"Commands (one per row; SEED = each seed):\n\n```\n{commands}\n```\n"
    )
    return found


if __name__ == "__main__":
    main()
