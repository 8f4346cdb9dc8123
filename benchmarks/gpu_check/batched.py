"""Part 5, ``batched``: ``batch_tasks=True`` against one backward pass per task on the GPU, on the
shared-input transformer of section 5 of ``benchmarks.compare`` (:mod:`benchmarks.compare_cheap`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..compare_cheap import run as run_cheap
from ..compare_cheap import table
from .output import say
from .plan import Plan
from .verdict import Part

__all__ = ["cheap_table", "run_batched"]


def run_batched(device: torch.device, plan: Plan) -> tuple[Part, list[dict[str, Any]]]:
    """Section 5 of benchmarks.compare on the GPU: the transformer's naive step, per-task floor,
    exact surgery one pass per task and batched (``batch_tasks=True``), T in the plan's table
    tasks up to 8. FAIL if the batched update differs from the sequential one by more than 1e-5
    relative (the same arithmetic in other kernels); the CPU measured batching slower, and this
    is where its GPU speed is first measured."""
    tasks = [t for t in plan.table_tasks if t <= 8] or [2]
    rows = run_cheap(
        plan.rounds < 7,
        log=say,
        workloads=["transformer"],
        tasks=tasks,
        variants=["naive", "per-task floor", "exact", "exact batched"],
        rounds=plan.rounds,
        memory=False,
        device=str(device),
    )
    worst = max(float(r["check"].split()[1]) for r in rows if r["variant"] == "exact batched")
    speed = {r["T"]: r["median_ms"] for r in rows if r["variant"] == "exact"}
    ratios = ", ".join(f"T={r['T']} {r['median_ms'] / speed[r['T']]:.2f}×" for r in rows if r["variant"] == "exact batched")
    part = Part("batched", "PASS" if worst <= 1e-5 else "FAIL",
                f"batched vs one pass per task: worst relative difference {worst:.1e}; time batched/sequential {ratios}")
    return part, rows


def cheap_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown of section 5's rows (benchmarks.compare_cheap.table)."""
    return table(list(rows))
