"""Part 4, ``table``: milliseconds, GB/s and the fraction of the measured copy bandwidth and of
the theoretical peak, per operation, dtype, T, P and backend; as Markdown and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from .. import _harness
from .._harness import bytes_moved, random_grads, split_rows, split_sizes
from .facts import Gpu
from .output import dtype_name, fmt_gbps, fmt_size, say
from .plan import OPS, TABLE_BACKENDS, TABLE_DTYPES, Plan
from .verdict import Part

__all__ = [
    "CSV_FIELDS",
    "TABLE_COLUMNS",
    "bench",
    "bytes_moved",
    "copy_bandwidth",
    "format_csv",
    "format_markdown",
    "free_bytes",
    "run_table",
    "sort_rows",
    "time_call",
]


def time_call(fn: Callable[[], object], device: torch.device, *, rounds: int = 7, min_round_s: float = 0.02) -> float:
    """Median seconds per call of ``fn``: CUDA events around rounds of calls on a GPU (perf_counter
    on CPU), each round lasting ≥ ``min_round_s``, after a warm-up call (compiles, caches)."""
    return _harness.median_time(fn, repeat=rounds, min_time=rounds * min_round_s, device=device)


def copy_bandwidth(device: torch.device, num_bytes: int, *, rounds: int = 7) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted, as STREAM does), in
    rounds of at least 20 ms."""
    return _harness.copy_bandwidth(num_bytes, device=device, repeat=rounds, min_time=rounds * 0.02)


def free_bytes(device: torch.device) -> int | None:
    """Free GPU memory in bytes (None off CUDA: nothing is skipped for memory there)."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0]


def _case_ops(kernels: ModuleType, matrix: Tensor, out: Tensor, weights: Tensor, views: list[list[Tensor]],
              grads: list[list[Tensor]], method: Any) -> dict[str, Callable[[], object]]:
    """The four timed operations of one backend on one case's tensors."""

    def flatten() -> None:
        for t in range(len(views)):
            kernels.flatten_into(views[t], grads[t])

    def step() -> None:  # what GradSurgery does once the task gradients exist
        flatten()
        kernels.combine_into(out, matrix, method.weights(kernels.gram(matrix)))

    return {
        "gram": lambda: kernels.gram(matrix),
        "combine": lambda: kernels.combine_into(out, matrix, weights),
        "flatten": flatten,
        "step": step,
    }


def bench(backends: dict[str, ModuleType], device: torch.device, *, tasks: Sequence[int], sizes: Sequence[int],
          dtypes: dict[torch.dtype, tuple[str, ...]] = TABLE_DTYPES, copy_Bps: float, peak_Bps: float | None,
          l2_bytes: int = 0, rounds: int = 7, min_round_s: float = 0.02,
          ) -> tuple[list[dict[str, Any]], list[str]]:
    """Time every op per backend over the grid; (rows, notes). A row: op, dtype, T, P, backend,
    ms, GBps, of_copy, of_peak, bytes, note."""
    from gradsurg.methods import PCGrad

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for size in sizes:
        for num_tasks in tasks:
            for dtype, ops in dtypes.items():
                element = torch.empty(0, dtype=dtype).element_size()
                with_grads = "flatten" in ops or "step" in ops
                need = ((2 if with_grads else 1) * num_tasks + 1) * size * element + (512 << 20)
                free = free_bytes(device)
                label = f"{dtype_name(dtype)} T={num_tasks} P={fmt_size(size)}"
                if free is not None and need > 0.9 * free:
                    note = f"skipped {label}: needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
                    notes.append(note)
                    say(f"[table] {note}")
                    continue
                matrix = torch.empty(num_tasks, size, device=device, dtype=dtype).normal_()
                out = torch.empty(size, device=device, dtype=dtype)
                ones = torch.ones(num_tasks, device=device)
                grads = random_grads(num_tasks, size, dtype=dtype, device=device) if with_grads else []
                views = split_rows(matrix, split_sizes(size)) if with_grads else []
                for name, kernels in backends.items():
                    fns = _case_ops(kernels, matrix, out, ones, views, grads, PCGrad())
                    parts = []
                    for op in ops:
                        moved = bytes_moved(op, num_tasks, size, element)
                        try:
                            seconds = time_call(fns[op], device, rounds=rounds, min_round_s=min_round_s)
                        except Exception as exc:
                            message = f"{name} {op} {label} raised {type(exc).__name__}: {str(exc).splitlines()[0]}"
                            notes.append(message)
                            say(f"[table] ERROR {message}")
                            rows.append(_row(op, dtype, num_tasks, size, name, None, moved, copy_Bps, peak_Bps,
                                             "error"))
                            if device.type == "cuda":
                                torch.cuda.synchronize(device)  # a broken context raises here: the table stops
                            continue
                        note = "fits in L2" if l2_bytes and moved <= l2_bytes else ""
                        row = _row(op, dtype, num_tasks, size, name, seconds, moved, copy_Bps, peak_Bps, note)
                        rows.append(row)
                        parts.append(f"{op} {row['ms']:.3f} ms {fmt_gbps(row['GBps'])} GB/s {row['of_copy']:.0%}")
                    say(f"[table] {label} {name:<6} " + " | ".join(parts))
                del matrix, out, grads, views
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows, notes


def _row(op: str, dtype: torch.dtype, num_tasks: int, size: int, backend: str, seconds: float | None, moved: int,
         copy_Bps: float, peak_Bps: float | None, note: str) -> dict[str, Any]:
    row: dict[str, Any] = {"op": op, "dtype": dtype_name(dtype), "T": num_tasks, "P": size, "backend": backend,
                           "ms": None, "GBps": None, "of_copy": None, "of_peak": None, "bytes": moved, "note": note}
    if seconds is not None and seconds > 0:
        rate = moved / seconds
        row.update(ms=seconds * 1e3, GBps=rate / 1e9, of_copy=rate / copy_Bps,
                   of_peak=rate / peak_Bps if peak_Bps else None)
    return row


TABLE_COLUMNS = ("op", "dtype", "T", "P", "backend", "ms", "GB/s", "of copy", "of peak", "note")


def _cells(row: dict[str, Any]) -> list[str]:
    def num(value: float | None, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    return [row["op"], row["dtype"], str(row["T"]), fmt_size(row["P"]), row["backend"], num(row["ms"], ".3f"),
            "—" if row["GBps"] is None else fmt_gbps(row["GBps"]), num(row["of_copy"], ".0%"),
            num(row["of_peak"], ".0%"), row["note"]]


def sort_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's order: operation, dtype, T, P, then backend in column order."""
    order = {op: i for i, op in enumerate(OPS)}
    dtypes = {"fp32": 0, "bf16": 1, "fp16": 2}
    backends = {name: i for i, name in enumerate(TABLE_BACKENDS)}
    return sorted(rows, key=lambda r: (order.get(r["op"], 9), dtypes.get(r["dtype"], 9), r["T"], r["P"],
                                       backends.get(r["backend"], 9)))


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The kernel table in Markdown, one row per (op, dtype, T, P, backend)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in sort_rows(rows)]
    return "\n".join(lines)


CSV_FIELDS = ("op", "dtype", "T", "P", "backend", "ms", "GBps", "of_copy", "of_peak", "bytes", "note")


def format_csv(rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None) -> str:
    """Every row as CSV (plain numbers; ``extra`` columns, e.g. the device, repeated per row)."""
    extra = extra or {}
    sink = io.StringIO()
    writer = csv.DictWriter(sink, fieldnames=[*CSV_FIELDS, *extra], lineterminator="\n")
    writer.writeheader()
    for row in sort_rows(rows):
        writer.writerow({**{k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS}, **extra})
    return sink.getvalue()


def run_table(device: torch.device, gpu: Gpu, plan: Plan, backends: dict[str, ModuleType],
              missing: dict[str, str]) -> tuple[Part, list[dict[str, Any]], list[str]]:
    """The copy bandwidth, then :func:`bench` of ``backends`` over the plan's grid; (part, rows,
    notes). ``missing`` (name → why not) are the table's backends that do not run here."""
    part = Part("table")
    copy_bytes = plan.copy_bytes
    if copy_bytes is None:
        free = free_bytes(device) or (1 << 30)
        copy_bytes = int(min(2 << 30, free // 4)) // 4 * 4
    copy_Bps = copy_bandwidth(device, copy_bytes, rounds=plan.rounds)
    peak_text = (f", {copy_Bps / gpu.peak_Bps:.0%} of the theoretical {gpu.peak_Bps / 1e9:.0f} GB/s"
                 if gpu.peak_Bps else " (theoretical peak not obtainable)")
    say(f"[table] device-to-device copy of {copy_bytes / 2**30:.2f} GiB: {fmt_gbps(copy_Bps / 1e9)} GB/s{peak_text}")
    rows, notes = bench(backends, device, tasks=plan.table_tasks, sizes=plan.table_sizes, copy_Bps=copy_Bps,
                        peak_Bps=gpu.peak_Bps, l2_bytes=gpu.l2_bytes, rounds=plan.rounds,
                        min_round_s=plan.min_round_s)
    notes.insert(0, f"copy bandwidth (device-to-device, read + write counted): {fmt_gbps(copy_Bps / 1e9)} GB/s"
                    f"{peak_text}; 'of copy' and 'of peak' are each row's GB/s over these")
    if gpu.l2_bytes:
        notes.append(f"'fits in L2': the bytes moved fit in the {gpu.l2_bytes / 2**20:.0f} MiB L2, so repeated "
                     "calls may read from cache and beat DRAM bandwidth")
    notes += [f"backend {name} not timed: {why}" for name, why in missing.items()]
    errors = [r for r in rows if r["ms"] is None]
    skipped = sum(n.startswith("skipped") for n in notes)
    part.status = "FAIL" if errors or not rows else "PASS"
    part.detail = (f"{len(rows) - len(errors)} timings of {', '.join(backends)}"
                   + (f", {len(errors)} raised" if errors else "")
                   + (f", {skipped} cases skipped (memory)" if skipped else "")
                   + (f"; not timed: {', '.join(missing)}" if missing else ""))
    return part, rows, notes
