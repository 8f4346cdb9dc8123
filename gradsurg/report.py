"""The conflict report of a trace: will surgery help on these tasks, and which method?

    python -m gradsurg.report runs/demo/trace.jsonl                 # every Gram method
    python -m gradsurg.report TRACE --methods mgda,upgrad --out DIR  # and PNGs in DIR

From one run's trace (``GradSurgery(trace=...)``) it prints, for the tasks: the cosine of each
pair's gradients over the steps, how often they conflict, and the spread of the gradient norms
(the imbalance that makes min-norm and bargaining methods starve a task); for each method,
replayed on the recorded Gram matrices (:func:`gradsurg.replay`): how far its update is from
the applied one, the worst task's cosine with it and each task's share of it; and a verdict in
plain words. With ``--out`` it draws the cosines over the steps, the task shares per method and
the deviation per method.

Every number after the first step describes the method *on this run's gradients* (see
:mod:`gradsurg._replay`), not a run trained with that method.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ._replay import Replay, gram_methods, replay
from ._stats import cosine_from_gram
from ._trace import read_trace

__all__ = ["Summary", "main", "summarize", "verdict"]

#: Below this relative deviation from the applied update a method "does not change it".
SMALL_DEVIATION = 0.01
#: Gradient-norm ratios from this on are called an imbalance.
IMBALANCE = 10.0
#: A task whose share is below this fraction of the equal share 1/T is "starved".
STARVED = 0.25


@dataclass
class PairSummary:
    """One pair of tasks over the steps: the median, lowest and highest cosine, and the share
    of steps on which they conflict (cosine < 0)."""

    pair: tuple[str, str]
    median: float
    low: float
    high: float
    conflict_rate: float


@dataclass
class MethodSummary:
    """One method over the steps: median and worst relative deviation from the applied update,
    the median deviation of its direction, the median over steps of the worst task's cosine
    with its update, and each task's mean share of it."""

    method: str
    median_deviation: float
    worst_deviation: float
    median_direction: float
    worst_task_cosine: float
    shares: dict[str, float]
    steps: int


@dataclass
class Summary:
    """What :func:`summarize` found: the tasks, the pairs, the norm spread, the methods."""

    tasks: tuple[str, ...]
    steps: int
    applied: str
    pairs: list[PairSummary]
    norm_ratio: float  # median over steps of max norm / min norm
    weakest: str  # the task with the smallest median gradient norm
    methods: list[MethodSummary]


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def summarize(result: Replay) -> Summary:
    """The numbers of the report, from a :func:`gradsurg.replay` result (its steps must all
    have the same tasks; the report says which steps it used)."""
    steps = result.steps
    if not steps:
        raise ValueError("trace: no recorded step")
    tasks = steps[-1].tasks
    used = [i for i, s in enumerate(steps) if s.tasks == tasks]
    pairs = []
    cosines = [cosine_from_gram(steps[i].gram) for i in used]
    for a in range(len(tasks)):
        for b in range(a + 1, len(tasks)):
            values = [float(c[a, b]) for c in cosines]
            pairs.append(
                PairSummary(
                    (tasks[a], tasks[b]), _median(values), min(values), max(values),
                    sum(v < 0 for v in values) / len(values),
                )
            )
    norms = torch.stack([steps[i].gram.diagonal().clamp(min=0).sqrt() for i in used])
    ratios = [float(n.max() / n.min()) if float(n.min()) > 0 else math.inf for n in norms]
    weakest = tasks[int(norms.median(dim=0).values.argmin())]
    methods = []
    for name, rep in result.methods.items():
        dev = [rep.deviation[i] for i in used]
        direction = [rep.direction[i] for i in used]
        worst_cos = [float(rep.cosines[i].min()) for i in used]
        shares = torch.stack([rep.shares[i] for i in used])
        ok = torch.isfinite(shares).all(dim=1)
        mean_shares = shares[ok].mean(dim=0) if bool(ok.any()) else torch.full((len(tasks),), math.nan)
        methods.append(
            MethodSummary(
                name,
                _median(dev),
                max((d for d in dev if math.isfinite(d)), default=math.nan),
                _median(direction),
                _median(worst_cos),
                dict(zip(tasks, mean_shares.tolist())),
                int(ok.sum()),
            )
        )
    return Summary(tasks, len(used), steps[-1].method, pairs, _median(ratios), weakest, methods)


def verdict(summary: Summary) -> list[str]:
    """The report's conclusions in plain words, one per line."""
    lines = []
    rates = [p.conflict_rate for p in summary.pairs]
    medians = [p.median for p in summary.pairs]
    lines.append(
        f"tasks conflict on {100 * max(rates):.0f} % of steps (the most conflicting pair), "
        f"median cosine {min(medians):+.2f} to {max(medians):+.2f}"
    )
    changers = [m for m in summary.methods if math.isfinite(m.median_direction)]
    small = [m.method for m in changers if m.median_direction < SMALL_DEVIATION]
    if changers and len(small) == len(changers):
        lines.append(
            f"no method turns the update by more than 1 % in the median: {summary.applied} is fine"
            + (" (the sum is fine)" if summary.applied in ("sum", "mean") else "")
        )
    elif small:
        lines.append(
            f"{', '.join(small)} turn the update by < 1 % in the median: on these tasks they act like {summary.applied}"
        )
    big = [m.method for m in changers if m.median_direction >= 0.1]
    if big:
        lines.append(f"{', '.join(big)} turn it by ≥ 10 %: they would train differently")
    if summary.norm_ratio >= IMBALANCE:
        equal = 1.0 / len(summary.tasks)
        starving = [
            m.method
            for m in summary.methods
            if math.isfinite(m.shares.get(summary.weakest, math.nan)) and m.shares[summary.weakest] < STARVED * equal
        ]
        lines.append(
            f"norms differ {summary.norm_ratio:.0f}× (median): {summary.weakest} has the smallest gradients"
            + (f"; {', '.join(starving)} will starve it (share < {STARVED:.0%} of 1/T)" if starving else "")
        )
    else:
        lines.append(f"gradient norms within {summary.norm_ratio:.1f}× of each other (median)")
    return lines


def format_report(summary: Summary) -> str:
    """The report as text (Markdown tables)."""
    out = [
        f"# gradsurg report: {summary.steps} steps, tasks {', '.join(summary.tasks)}, applied {summary.applied}",
        "",
        "| pair | median cos | min | max | conflicting steps |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for p in summary.pairs:
        cells = f"{p.median:+.3f} | {p.low:+.3f} | {p.high:+.3f} | {100 * p.conflict_rate:.0f} %"
        out.append(f"| {p.pair[0]} / {p.pair[1]} | {cells} |")
    out += ["", f"gradient-norm ratio (max/min, median over steps): {summary.norm_ratio:.2f}; smallest: {summary.weakest}", ""]
    header = "| method | median deviation | worst | direction | worst-task cos | "
    header += " | ".join(f"share {t}" for t in summary.tasks) + " |"
    out += [header, "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in summary.tasks) + " |"]
    for m in summary.methods:
        shares = " | ".join(f"{100 * m.shares[t]:.1f} %" for t in summary.tasks)
        out.append(
            f"| {m.method} | {100 * m.median_deviation:.2f} % | {100 * m.worst_deviation:.1f} % | "
            f"{100 * m.median_direction:.2f} % | {m.worst_task_cosine:+.3f} | {shares} |"
        )
    out += ["", *[f"- {line}" for line in verdict(summary)]]
    return "\n".join(out)


def plot(result: Replay, summary: Summary, out: Path) -> list[Path]:
    """cosines.png (each pair over the steps), shares.png (task shares per method),
    deviation.png (deviation per method over the steps); the paths written."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("--out: the PNGs need matplotlib (pip install matplotlib)") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    tasks, written = summary.tasks, []
    steps = [s for s in result.steps if s.tasks == tasks]
    grid = torch.stack([cosine_from_gram(s.gram) for s in steps])
    pairs = [(a, b) for a in range(len(tasks)) for b in range(a + 1, len(tasks))]
    heat = torch.stack([grid[:, a, b] for a, b in pairs]).numpy()
    fig, ax = plt.subplots(figsize=(8, 1 + 0.5 * len(pairs)))
    image = ax.imshow(heat, aspect="auto", cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(pairs)), [f"{tasks[a]}/{tasks[b]}" for a, b in pairs])
    ax.set_xlabel("step")
    ax.set_title("cosine of the task gradients")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    written.append(out / "cosines.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.35 * (len(summary.methods) + 1)))
    names = [f"{summary.applied} (applied)"] + [m.method for m in summary.methods]
    rows = [
        [float(torch.stack([result.applied.shares[i] for i in range(len(steps))]).mean(0)[k]) for k in range(len(tasks))]
    ] + [[m.shares[t] for t in tasks] for m in summary.methods]
    left = [0.0] * len(rows)
    for k, task in enumerate(tasks):
        values = [0.0 if math.isnan(r[k]) else r[k] for r in rows]
        ax.barh(names, values, left=left, label=task)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("share of the update (mean over steps)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    written.append(out / "shares.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, rep in result.methods.items():
        ax.plot([s.step for s in result.steps], [100 * d for d in rep.deviation], label=name, linewidth=1)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("step")
    ax.set_ylabel("deviation from the applied update (%)")
    ax.legend(fontsize="x-small", ncol=3)
    fig.tight_layout()
    written.append(out / "deviation.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> Summary:
    """The command line: read the trace, replay, print the report (and draw with ``--out``)."""
    parser = argparse.ArgumentParser(prog="python -m gradsurg.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", type=Path, help="the trace file (GradSurgery(trace=...))")
    parser.add_argument("--methods", default=None, help="comma-separated Gram methods (default: every one)")
    parser.add_argument("--out", type=Path, default=None, help="a folder for the PNGs and report.md")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.trace.is_file():
        parser.error(f"trace: no file {args.trace}")
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods is not None:
        unknown = [m for m in methods if m not in gram_methods()]
        if unknown:
            parser.error(f"--methods: not Gram methods: {unknown}; known: {', '.join(gram_methods())}")
    steps = read_trace(args.trace)
    if not steps:
        parser.error(f"trace: {args.trace} holds no step")
    result = replay(steps, methods, progress=not args.quiet and len(steps) > 50)
    summary = summarize(result)
    text = format_report(summary)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(text + "\n")
        for path in plot(result, summary, args.out):
            print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
