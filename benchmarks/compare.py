"""gradsurg vs TorchJD vs LibMTL, in one process, on the same tensors.

    python -m benchmarks.compare --quick          # a smaller grid, under 2 minutes
    python -m benchmarks.compare                  # the full run behind docs/benchmarks.md
    python -m benchmarks.compare --sections aggregation,training --libmtl-path ~/src/LibMTL

Sections (each a module of this package):

1. ``aggregation`` (compare_aggregation): per-task gradient lists → combined ``.grad``;
2. ``training`` (compare_training): a whole training step of a shared-trunk MLP / transformer;
3. ``llm`` (compare_llm): the example's workload, SmolLM2-135M + LoRA, one classification and
   one summarization batch;
4. ``memory`` (memory): peak RSS of each case in its own subprocess, over the model's footprint;
5. ``cheap`` (compare_cheap): T tasks on one shared input batch — naive, the per-task floor, exact
   surgery one pass per task and batched, ``refresh_every``, representation-level, bf16 J —
   on a transformer and on SmolLM2 + LoRA, time and peak memory.

Every peer's combined gradient is checked against gradsurg's before it is timed (the ``check``
column). The script prints Markdown tables with medians and ratios — peer ÷ gradsurg, gradsurg ÷
the memory-bandwidth bound measured by a STREAM-like copy in the same run, the training step ÷
the plain sum-of-losses step — then the issue's targets as met/missed, and writes ``OUT/rows.csv``,
``OUT/report.md`` and ``OUT/aggregation.png`` (time vs P per method and library).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import time
from pathlib import Path

from ._harness import bytes_moved, copy_bandwidth, machine_facts

SECTIONS = {
    "aggregation": "compare_aggregation",
    "training": "compare_training",
    "llm": "compare_llm",
    "memory": "memory",
    "cheap": "compare_cheap",
}

#: The library whose time every ratio divides by, per section, in order of preference.
GRADSURG = ("gradsurg[cpp]", "gradsurg[torch]")


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _fmt_p(size: int) -> str:
    return f"{size:.0e}".replace("e+0", "e") if size >= 1000 else str(size)


def _ours(rows: list[dict], key: tuple) -> dict | None:
    """gradsurg's row for one case: the C++ backend when measured, else the torch backend."""
    for library in GRADSURG:
        for r in rows:
            if r["library"] == library and _case_key(r) == key:
                return r
    return None


def _case_key(row: dict) -> tuple:
    return (row.get("model", ""), row["T"], row["P"], row.get("dtype", ""), row["method"])


def aggregation_table(rows: list[dict], bandwidth: float) -> str:
    """Section 1: milliseconds, peer ÷ gradsurg, gradsurg ÷ bandwidth bound."""
    lines = [
        "| T | P | method | library | ms | ÷ gradsurg | × bound | check |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ours = _ours(rows, _case_key(r))
        ratio = f"{r['median_ms'] / ours['median_ms']:.1f}×" if ours else "—"
        # One fp32 surgery step: flatten, Gram and combine, 4(4T + 1)P bytes.
        bound_ms = 1e3 * bytes_moved("step", r["T"], r["P"]) / bandwidth
        lines.append(
            f"| {r['T']} | {_fmt_p(r['P'])} | {r['method']} | {r['library']} | {_fmt_ms(r['median_ms'])} "
            f"| {ratio} | {r['median_ms'] / bound_ms:.2f} | {r['check']} |"
        )
    return "\n".join(lines)


def step_table(rows: list[dict]) -> str:
    """Sections 2 and 3: milliseconds, ÷ naive step, ÷ per-task floor, peer ÷ gradsurg."""
    lines = [
        "| model | T | P | method | library | ms | ÷ naive | ÷ per-task floor | ÷ gradsurg | check |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]

    def base(r: dict, library: str) -> dict | None:
        # The baselines are method-independent: any method's row of the same model and T.
        for b in rows:
            if b["library"] == library and (b.get("model"), b["T"]) == (r.get("model"), r["T"]):
                return b
        return None

    for r in rows:
        naive, floor, ours = base(r, "naive"), base(r, "per-task-floor"), _ours(rows, _case_key(r))
        cells = []
        for b in (naive, floor, ours):
            cells.append(f"{r['median_ms'] / b['median_ms']:.2f}" if b else "—")
        lines.append(
            f"| {r.get('model', '')} | {r['T']} | {_fmt_p(r['P'])} | {r['method']} | {r['library']} "
            f"| {_fmt_ms(r['median_ms'])} | {' | '.join(cells)} | {r.get('check', '')} |"
        )
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    """Section 4: peak and extra resident memory, and what each library adds over the plain
    step (and over merely holding the T task gradients), against one T×P fp32 buffer."""
    lines = [
        "| case | T | P | method | library | peak MB | extra MB | over naive MB | over floor MB "
        "| one T×P buffer MB | over naive ÷ buffer |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def mb(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f}"

    for r in rows:
        over = r.get("over_naive_mb")
        ratio = f"{over / r['bound_mb']:.2f}" if over is not None and r.get("bound_mb") else "—"
        lines.append(
            f"| {r['case']} | {r['T']} | {_fmt_p(r['P'])} | {r['method']} | {r['library']} "
            f"| {r['peak_mb']:.0f} | {r['extra_mb']:.0f} | {mb(over)} | {mb(r.get('over_floor_mb'))} "
            f"| {r['bound_mb']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def targets(by_section: dict[str, list[dict]]) -> str:
    """The issue's targets (CPU, T = 4..8, P = 1e6..1e7), each with the worst measured case."""
    lines = ["| target | worst case | measured | met |", "| --- | --- | ---: | --- |"]

    def add(name: str, worst: tuple[str, float] | None, goal: float, higher_is_better: bool) -> None:
        if worst is None:
            lines.append(f"| {name} | not measured in this run | — | — |")
            return
        case, value = worst
        met = value >= goal if higher_is_better else value <= goal
        lines.append(f"| {name} | {case} | {value:.2f}× | {'yes' if met else 'no'} |")

    agg = [r for r in by_section.get("aggregation", []) if 4 <= r["T"] <= 8 and 1e6 <= r["P"] <= 1e7]
    for peer, goal in (("torchjd", 5.0), ("libmtl", 10.0)):
        ratios = []
        for r in agg:
            ours = _ours(agg, _case_key(r))
            if r["library"] == peer and ours:
                ratios.append((f"{r['method']} T={r['T']} P={_fmt_p(r['P'])}", r["median_ms"] / ours["median_ms"]))
        add(f"surgery step ≥ {goal:.0f}× faster than {peer}", min(ratios, key=lambda x: x[1]) if ratios else None,
            goal, True)

    train = by_section.get("training", [])
    overheads = []
    for r in train:
        # gradsurg's row of each case is its best backend (cpp when built), as in the tables.
        if r["library"] in GRADSURG and r is _ours(train, _case_key(r)) and 4 <= r["T"] <= 8:
            floor = next((b for b in train if b["library"] == "per-task-floor"
                          and (b["model"], b["T"]) == (r["model"], r["T"])), None)
            if floor:
                overheads.append((f"{r['model']} {r['method']} T={r['T']} {r['library']}",
                                  r["median_ms"] / floor["median_ms"]))
    add("training step ≤ 1.10× the per-task-gradient floor", max(overheads, key=lambda x: x[1]) if overheads else None,
        1.10, False)

    llm = by_section.get("llm", [])
    naive = next((r for r in llm if r["library"] == "naive"), None)
    ours = [(f"{r['method']} {r['library']}", r["median_ms"] / naive["median_ms"])
            for r in llm if naive and r["library"] in GRADSURG and r is _ours(llm, _case_key(r))]
    add("example workload ≤ 1.03× the naive step", max(ours, key=lambda x: x[1]) if ours else None, 1.03, False)

    # What gradsurg adds over the plain sum-of-losses step: the naive step's own gradients,
    # optimizer state and activations are the model's footprint, not surgery's.
    mem = [(f"{r['case']} {r['method']}", r["over_naive_mb"] / r["bound_mb"])
           for r in by_section.get("memory", [])
           if r["library"] in GRADSURG and r.get("bound_mb") and r.get("over_naive_mb") is not None]
    add("extra memory over the naive step ≤ one T×P buffer", max(mem, key=lambda x: x[1]) if mem else None, 1.0, False)

    # Section 5, at T = 4 (the targets for the cheap paths), worst over the models.
    cheap = [r for r in by_section.get("cheap", []) if r["T"] == 4]

    def worst(variant: str, key: str) -> tuple[str, float] | None:
        found = [(f"{r['model']} T=4", r[key]) for r in cheap if r["variant"] == variant and r.get(key) is not None]
        return max(found, key=lambda x: x[1]) if found else None

    add("representation-level ≤ 1.3× the naive step", worst("representation", "vs_naive"), 1.3, False)
    add("refresh_every=16 ≤ 1.15× the naive step", worst("refresh_every=16", "vs_naive"), 1.15, False)
    add("exact (one pass per task) ≤ 1.05× the per-task floor", worst("exact", "vs_floor"), 1.05, False)
    for variant, goal in (("exact", 1.0), ("exact, bf16 J", 0.5)):
        over = [(f"{r['model']} T=4", r["over_floor_mb"] / r["bound_mb"]) for r in cheap
                if r["variant"] == variant and r.get("over_floor_mb") is not None]
        add(f"{variant}: memory over the floor ≤ {goal}× one T×P fp32 buffer",
            max(over, key=lambda x: x[1]) if over else None, goal, False)
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> bool:
    """Time vs P per method (one panel each) and library (one colour each), T by line style."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    methods = sorted({r["method"] for r in rows})
    if not methods:
        return False
    libraries = sorted({r["library"] for r in rows})
    tasks = sorted({r["T"] for r in rows})
    cols = min(4, len(methods))
    nrows = -(-len(methods) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    styles = ["-", "--", ":", "-."]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, method in zip(axes.flat, methods):
        for li, library in enumerate(libraries):
            for ti, num_tasks in enumerate(tasks):
                pts = sorted((r["P"], r["median_ms"]) for r in rows
                             if (r["method"], r["library"], r["T"]) == (method, library, num_tasks))
                if pts:
                    ax.plot(*zip(*pts), styles[ti % len(styles)], marker="o", ms=3,
                            color=colours[li % len(colours)], label=f"{library} T={num_tasks}")
        ax.set(xscale="log", yscale="log", title=method, xlabel="P (shared parameters)", ylabel="ms")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_csv(rows: list[dict], path: Path) -> None:
    """Every row of every section, the union of their keys as columns."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    """Run the chosen sections, print and write the report; returns the rows per section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller grid (under 2 minutes)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--libmtl-path", default=None,
                        help="directory of a LibMTL checkout (default: the installed package)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"), help="output folder")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    bandwidth = copy_bandwidth()
    header = (f"machine: {machine_facts()}\nSTREAM-like copy bandwidth: {bandwidth / 1e9:.1f} GB/s\n"
              f"command: python -m benchmarks.compare {' '.join(argv) if argv is not None else ''}".rstrip())
    print(header, flush=True)
    by_section: dict[str, list[dict]] = {}
    for section in chosen:
        module = importlib.import_module(f".{SECTIONS[section]}", __package__)
        kwargs = {"libmtl_path": args.libmtl_path} if section in ("aggregation", "training") else {}
        print(f"\n## {section}", flush=True)
        by_section[section] = module.run(args.quick, **kwargs)

    parts = [f"# gradsurg vs TorchJD vs LibMTL\n\n```\n{header}\n```"]
    if "aggregation" in by_section:
        parts.append("## 1. Aggregation only (per-task gradient lists → .grad)\n\n"
                     + aggregation_table(by_section["aggregation"], bandwidth))
    if "training" in by_section:
        parts.append("## 2. Training step, shared-trunk models\n\n" + step_table(by_section["training"]))
    if "llm" in by_section:
        parts.append("## 3. The example's workload (SmolLM2-135M + LoRA, T = 2)\n\n" + step_table(by_section["llm"]))
    if "memory" in by_section:
        parts.append("## 4. Peak memory (own subprocess per case)\n\n" + memory_table(by_section["memory"]))
    if "cheap" in by_section:
        from .compare_cheap import table as cheap_table

        parts.append("## 5. Cheap paths, T tasks on one shared batch\n\n" + cheap_table(by_section["cheap"]))
    parts.append("## Targets (CPU, T = 4..8, P = 1e6..1e7)\n\n" + targets(by_section))
    parts.append(f"Total time: {time.perf_counter() - start:.0f} s.")
    report = "\n\n".join(parts) + "\n"
    print("\n" + report)
    (args.out / "report.md").write_text(report)
    write_csv([r for rows in by_section.values() for r in rows], args.out / "rows.csv")
    if by_section.get("aggregation") and plot(by_section["aggregation"], args.out / "aggregation.png"):
        print(f"wrote {args.out / 'aggregation.png'}")
    print(f"wrote {args.out / 'report.md'} and {args.out / 'rows.csv'}")
    return by_section


if __name__ == "__main__":
    main()
