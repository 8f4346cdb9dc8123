#!/usr/bin/env python
"""Run the paper's comparison (its Table 1) with one budget and seed, and write docs/results.md.

Trains, with the same data subsets, steps, batch size and seed: single-task classification,
single-task summarization, and multi-task ``mean`` (plain sum of losses), ``pcgrad``,
``cagrad``, ``upgrad``, ``nash_mtl`` and the paper's ``cosreg`` — each a subprocess of
``examples/train_glue_summarization.py`` — then writes a Markdown table (accuracy, ROUGE-1/2/L,
wall time, seconds per step) with the exact commands to ``docs/results.md``.

    python examples/run_comparison.py                  # SmolLM2-135M + LoRA, the default budget
    python examples/run_comparison.py --preset tiny --steps 10 --out /tmp/cmp   # a smoke run

Nothing is tuned: every run uses the script's defaults plus the budget flags below, and the
validation rows reported are never used for any choice.
"""

from __future__ import annotations

import argparse
import json
import shlex
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


def budget_flags(args: argparse.Namespace) -> list[str]:
    """The flags every run shares (data, budget, seed)."""
    return [
        "--preset", args.preset, "--glue", "sst2", "--summarization", "aeslc",
        "--steps", str(args.steps), "--eval-every", str(args.steps),
        "--batch-size", str(args.batch_size), "--max-train", str(args.max_train),
        "--max-eval", str(args.max_eval), "--max-source-len", str(args.max_source_len),
        "--max-target-len", str(args.max_target_len), "--seed", str(args.seed), "--quiet",
    ]


def run(label: str, flags: list[str], args: argparse.Namespace) -> dict:
    """Train one configuration in a subprocess; returns its final metrics and timings."""
    out = args.out / label.split(" (")[0].replace(" ", "_")
    command = [sys.executable, str(SCRIPT), *budget_flags(args), *flags, "--output-dir", str(out)]
    print(f"== {label}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    return {"label": label, "flags": flags, "wall": wall, "metrics": metrics}


def table(results: list[dict]) -> str:
    """The Table-1-style Markdown table."""
    lines = [
        "| run | SST-2 accuracy | AESLC ROUGE-1 | ROUGE-2 | ROUGE-L | wall time (s) | s / step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        final = r["metrics"]["final"]["tasks"]
        cls, summ = final.get("sst2", {}), final.get("aeslc", {})

        def pct(d: dict, key: str) -> str:
            return f"{100 * d[key]:.2f}" if key in d else "—"

        lines.append(
            f"| {r['label']} | {pct(cls, 'accuracy')} | {pct(summ, 'rouge1')} | {pct(summ, 'rouge2')} "
            f"| {pct(summ, 'rougeL')} | {r['wall']:.0f} | {r['metrics']['seconds_per_step']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every configuration, print the table, write ``--results``; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2", choices=("tiny", "smollm2"), help="backbone")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per task per step")
    parser.add_argument("--max-train", type=int, default=2000, help="training rows per task")
    parser.add_argument("--max-eval", type=int, default=64, help="validation rows per task")
    parser.add_argument("--max-source-len", type=int, default=64, help="source tokens")
    parser.add_argument("--max-target-len", type=int, default=16, help="summary tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run")
    parser.add_argument("--out", type=Path, default=Path("runs/comparison"), help="run folders")
    parser.add_argument("--results", type=Path, default=HERE.parent / "docs" / "results.md",
                        help="Markdown file to write")
    parser.add_argument("--only", default=None, help="comma-separated run indices (0-based) to run")
    args = parser.parse_args(argv)
    chosen = RUNS if args.only is None else [RUNS[int(i)] for i in args.only.split(",")]
    results = [run(label, flags, args) for label, flags in chosen]
    text = table(results)
    print(text)
    commands = "\n".join(
        f"python examples/train_glue_summarization.py {shlex.join(budget_flags(args) + r['flags'])}"
        for r in results
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        "# Results: GLUE classification + summarization on one shared backbone\n\n"
        f"Produced by `python examples/run_comparison.py {shlex.join(argv or sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d')}, 2-core CPU, torch threads = 2).\n\n"
        f"{text}\n\nCommands (one per row):\n\n```\n{commands}\n```\n"
    )
    return results


if __name__ == "__main__":
    main()
