"""The per-step cost of recording the Gram trace (``GradSurgery(trace=...)``).

    python -m benchmarks.trace_cost              # transformer workload, T = 2, 4, 8
    python -m benchmarks.trace_cost --quick      # T = 4 only

The same exact step with and without ``trace=``, taking turns within each round so that the
machine's drift hits both alike (as in :mod:`benchmarks.compare_cheap`); prints the median
milliseconds of each and their ratio (a difference within the run's noise at this size), the
writer alone timed on 1000 records (what the trace really adds, and its share of a step), and
the bytes one record adds to the file. A record is one
JSON line of T losses, T weights and the T×T Gram matrix, written and flushed once per step: its
cost does not grow with the model.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gradsurg import GradSurgery
from gradsurg._stats import make_stats
from gradsurg._trace import TraceWriter

from ._harness import machine_facts
from .compare_cheap import load_workload

__all__ = ["main", "measure"]


def measure(num_tasks: int, rounds: int, folder: Path, quick: bool = True) -> dict[str, float]:
    """Median seconds per step without and with the trace, and the bytes per record."""
    work = load_workload("transformer", num_tasks, quick)
    trace = folder / f"trace-T{num_tasks}.jsonl"
    steps = {}
    for name, options in (("plain", {}), ("traced", {"trace": trace})):
        base = torch.optim.AdamW([{"params": work.shared}, {"params": work.heads}], lr=1e-4)
        opt = GradSurgery(base, "upgrad", shared=work.shared, **options)

        def step(opt: GradSurgery = opt) -> None:
            opt.zero_grad()
            opt.backward(work.forward()[1])
            opt.step()

        steps[name] = step
    for step in steps.values():  # warm-up: lazy kernels, buffers, the trace's header
        step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(rounds):
        # Each goes first in every other round: the second step of a round runs on a warmer
        # (or busier) machine, which would otherwise count as the trace's cost.
        for name in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - start)
    lines = trace.read_text().splitlines()
    # The writer alone, on the last step's stats: what the trace adds, without the step's noise.
    stats = make_stats(
        [f"t{i}" for i in range(num_tasks)], torch.ones(num_tasks, dtype=torch.float64),
        torch.eye(num_tasks, dtype=torch.float64) + 0.1, torch.ones(num_tasks, dtype=torch.float64),
        method="upgrad", backend="cpp",
    )  # fmt: skip
    writer = TraceWriter(folder / "writer.jsonl")
    writer.record(0, stats)
    start = time.perf_counter()
    for i in range(1000):
        writer.record(i, stats)
    record = (time.perf_counter() - start) / 1000
    writer.close()
    return {
        "record": record,
        "plain": statistics.median(samples["plain"]),
        "traced": statistics.median(samples["traced"]),
        "bytes_per_record": sum(len(line) + 1 for line in lines[1:]) / max(len(lines) - 1, 1),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure and print the table; returns its rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 4 only, fewer rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 30, quick 10)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 30)
    rows = []
    print(machine_facts())
    print("| T | plain ms | traced ms | traced ÷ plain | one record µs | record ÷ plain step | bytes per record |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for num_tasks in ([4] if args.quick else [2, 4, 8]):
            row = {"T": num_tasks, **measure(num_tasks, rounds, Path(folder), quick=True)}
            rows.append(row)
            print(
                f"| {num_tasks} | {1e3 * row['plain']:.2f} | {1e3 * row['traced']:.2f} | "
                f"{row['traced'] / row['plain']:.3f} | {1e6 * row['record']:.1f} | "
                f"{row['record'] / row['plain']:.1e} | {row['bytes_per_record']:.0f} |"
            )
    return rows


if __name__ == "__main__":
    main()
