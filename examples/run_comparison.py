#!/usr/bin/env python
"""Run the paper's comparison (its Table 1) over seeds, and write docs/results.md.

Trains, with the same data subsets, steps, batch size and seeds: single-task classification,
single-task summarization, and multi-task ``mean`` (plain sum of losses), ``pcgrad``,
``cagrad``, ``upgrad``, ``nash_mtl`` and the paper's ``cosreg`` — each a subprocess of
``examples/train_glue_summarization.py`` — then writes a Markdown table (accuracy, ROUGE-1/2/L,
wall time, seconds per step; mean ± sample standard deviation over the seeds) with the exact
commands to ``docs/results.md``.

    python examples/run_comparison.py --seeds 0,1,2     # SmolLM2-135M + LoRA, the default budget
    python examples/run_comparison.py --preset tiny --steps 10 --out /tmp/cmp   # a smoke run

A long comparison can be split: ``--only`` picks rows, every (row, seed) gets its own folder
``OUT/<row>/seed<k>``, and ``--collect`` trains nothing and tabulates every seed found there
(the ``n`` column says how many).

Nothing is tuned on the reported rows: every run uses the script's defaults plus the budget
flags below; the validation rows reported are never used for any choice.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "train_glue_summarization.py"

#: (label, extra flags) of every run, in the order of the table.
RUNS = (
    ("single-task classification", ["--single-task", "sst2"]),
    ("single-task summarization", ["--single-task", "aeslc"]),
    ("multi-task mean (sum of losses)", ["--method", "mean"]),
    ("multi-task pcgrad", ["--method", "pcgrad"]),
    ("multi-task cagrad", ["--method", "cagrad"]),
    ("multi-task upgrad", ["--method", "upgrad"]),
    ("multi-task nash_mtl", ["--method", "nash_mtl"]),
    ("multi-task cosreg (arXiv:2412.06249)", ["--method", "cosreg"]),
)

#: The table's metric columns: (header, task, metric key).
COLUMNS = (
    ("SST-2 accuracy", "sst2", "accuracy"),
    ("AESLC ROUGE-1", "aeslc", "rouge1"),
    ("ROUGE-2", "aeslc", "rouge2"),
    ("ROUGE-L", "aeslc", "rougeL"),
)


def budget_flags(args: argparse.Namespace) -> list[str]:
    """The flags every run shares (data, budget, head learning rate), without the seed."""
    flags = [
        "--preset", args.preset, "--glue", "sst2", "--summarization", "aeslc",
        "--steps", str(args.steps), "--eval-every", str(args.steps),
        "--batch-size", str(args.batch_size), "--max-train", str(args.max_train),
        "--max-eval", str(args.max_eval), "--max-source-len", str(args.max_source_len),
        "--max-target-len", str(args.max_target_len), "--eval-batch-size", str(args.eval_batch_size),
        "--quiet",
    ]
    if args.head_lr is not None:
        flags += ["--task-lr", f"cls={args.head_lr}"]
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    return flags


def run_dir(out: Path, label: str, seed: int) -> Path:
    """The folder of one (row, seed) run."""
    return out / label.split(" (")[0].replace(" ", "_") / f"seed{seed}"


def run(label: str, flags: list[str], seed: int, args: argparse.Namespace) -> dict:
    """Train one configuration and seed in a subprocess; returns its final metrics and timings."""
    out = run_dir(args.out, label, seed)
    command = [sys.executable, str(SCRIPT), *budget_flags(args), "--seed", str(seed), *flags,
               "--output-dir", str(out)]
    print(f"== {label}, seed {seed}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    # The wall time (model loading and evaluation included) is only known out here; keep it
    # beside the run's own metrics so that --collect can tabulate it later.
    (out / "runner.json").write_text(json.dumps({"label": label, "seed": seed, "wall": wall}))
    return load(out, label, flags)


def load(out: Path, label: str, flags: list[str]) -> dict:
    """One finished run read back from its folder."""
    metrics = json.loads((out / "metrics.json").read_text())
    wall = json.loads((out / "runner.json").read_text())["wall"]
    return {"label": label, "flags": flags, "seed": metrics["config"]["seed"], "wall": wall,
            "metrics": metrics}


def collect(label: str, flags: list[str], args: argparse.Namespace) -> list[dict]:
    """Every finished seed of one row under ``--out`` whose budget matches this invocation's."""
    found = []
    for seed in args.seeds:
        out = run_dir(args.out, label, seed)
        if (out / "metrics.json").is_file() and (out / "runner.json").is_file():
            result = load(out, label, flags)
            config = result["metrics"]["config"]
            if (config["steps"], config["max_eval"], config["batch_size"]) != (
                args.steps, args.max_eval, args.batch_size
            ):
                raise SystemExit(f"--collect: {out} was trained with another budget than this call's")
            found.append(result)
    return found


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sample std`` (just the mean for one value; ``—`` for none)."""
    if not values:
        return "—"
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: list[list[dict]]) -> str:
    """The Table-1-style Markdown table, one line per row, aggregated over its seeds."""
    header = ["run", "n", *(c[0] for c in COLUMNS), "wall time (s)", "s / step"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for results in rows:
        if not results:
            continue
        cells = [results[0]["label"], str(len(results))]
        for _, task, key in COLUMNS:
            values = [r["metrics"]["final"]["tasks"].get(task, {}).get(key) for r in results]
            cells.append(mean_std([v for v in values if v is not None], scale=100.0))
        cells.append(mean_std([r["wall"] for r in results], digits=0))
        cells.append(mean_std([r["metrics"]["seconds_per_step"] for r in results]))
        lines.append("| " + " | ".join(cells) + " |")
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


def main(argv: list[str] | None = None) -> list[list[dict]]:
    """Run (or ``--collect``) every configuration, print the table, write ``--results``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2", choices=("tiny", "smollm2"), help="backbone")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per task per step")
    parser.add_argument("--max-train", type=int, default=2000, help="training rows per task")
    parser.add_argument("--max-eval", type=int, default=200, help="validation rows per task")
    parser.add_argument("--max-source-len", type=int, default=64, help="source tokens")
    parser.add_argument("--max-target-len", type=int, default=16, help="summary tokens")
    parser.add_argument("--eval-batch-size", type=int, default=32,
                        help="rows per evaluation batch (generation is batched, left-padded)")
    parser.add_argument("--head-lr", type=float, default=1e-3,
                        help="learning rate of the classification head (the backbone keeps the "
                             "script's --lr); 0 or less keeps the script's default")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of every run (default: the script's, all cores); with 1, "
                             "two runners on disjoint --only rows share a 2-core machine well")
    parser.add_argument("--seeds", type=parse_seeds, default=[0], help="comma-separated seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/comparison"), help="run folders")
    parser.add_argument("--results", type=Path, default=HERE.parent / "docs" / "results.md",
                        help="Markdown file to write")
    parser.add_argument("--only", default=None, help="comma-separated row indices (0-based) to run")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing; tabulate the seeds already in --out")
    args = parser.parse_args(argv)
    if args.head_lr is not None and args.head_lr <= 0:
        args.head_lr = None
    try:
        chosen = RUNS if args.only is None else [RUNS[int(i)] for i in args.only.split(",")]
    except (ValueError, IndexError):
        parser.error(f"--only: expected row indices in 0..{len(RUNS) - 1}, got {args.only!r}")
    if args.collect:
        rows = [collect(label, flags, args) for label, flags in chosen]
    else:
        rows = [[run(label, flags, seed, args) for seed in args.seeds] for label, flags in chosen]
    text = table(rows)
    print(text)
    commands = "\n".join(
        f"python examples/train_glue_summarization.py {shlex.join([*budget_flags(args), '--seed', 'SEED', *flags])}"
        for label, flags in chosen
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        "# Results: GLUE classification + summarization on one shared backbone\n\n"
        f"Produced by `python examples/run_comparison.py {shlex.join(argv if argv is not None else sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d')}, 2-core CPU, torch threads per run = {args.threads or 'all cores'}). "
        "Values are mean ± sample standard deviation over the `n` seeds.\n\n"
        f"{text}\n\nCommands (one per row; SEED = each seed):\n\n```\n{commands}\n```\n"
    )
    return rows


if __name__ == "__main__":
    main()
