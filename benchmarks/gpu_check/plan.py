"""What the sweep and the table cover: the full grids, the --quick ones, and the plan of a run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "GPU_BACKENDS",
    "LAYOUTS",
    "OPS",
    "QUICK_SWEEP_SIZES",
    "QUICK_SWEEP_TASKS",
    "QUICK_TABLE_SIZES",
    "QUICK_TABLE_TASKS",
    "SWEEP_DTYPES",
    "SWEEP_SIZES",
    "SWEEP_TASKS",
    "TABLE_BACKENDS",
    "TABLE_DTYPES",
    "TABLE_SIZES",
    "TABLE_TASKS",
    "Plan",
]

#: The backends this check exists for; the sweep checks them against the oracle.
GPU_BACKENDS = ("cuda", "triton")

SWEEP_TASKS = (1, 2, 3, 8, 16, 64, 65)
SWEEP_SIZES = (1, 1000, 1_000_000)
QUICK_SWEEP_TASKS = (1, 3, 16, 65)
QUICK_SWEEP_SIZES = (1, 1000, 100_000)
SWEEP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LAYOUTS = ("contiguous", "strided", "column-major")

TABLE_TASKS = (2, 4, 8, 16)
TABLE_SIZES = (1_000_000, 10_000_000, 100_000_000)
QUICK_TABLE_TASKS = (2, 8)
QUICK_TABLE_SIZES = (1_000_000, 10_000_000)
OPS = ("gram", "combine", "flatten", "step")
#: Operations timed per dtype: fp32 all, bf16 the two that read J in its own dtype.
TABLE_DTYPES: dict[torch.dtype, tuple[str, ...]] = {torch.float32: OPS, torch.bfloat16: ("gram", "combine")}
#: The table's backends, in column order; ``torch`` (the reference, on the GPU) is the baseline.
TABLE_BACKENDS = ("cuda", "triton", "torch")


@dataclass
class Plan:
    """What the sweep and the table cover (from --quick; tests shrink it further)."""

    sweep_tasks: Sequence[int] = SWEEP_TASKS
    sweep_sizes: Sequence[int] = SWEEP_SIZES
    table_tasks: Sequence[int] = TABLE_TASKS
    table_sizes: Sequence[int] = TABLE_SIZES
    rounds: int = 7
    min_round_s: float = 0.02
    sweep_backends: Sequence[str] = GPU_BACKENDS
    table_backends: Sequence[str] = TABLE_BACKENDS
    copy_bytes: int | None = None  # None: 2 GiB, or a quarter of the free memory if less

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        """The full plan, or the --quick one (smaller grids, 5 rounds)."""
        if args.quick:
            return cls(QUICK_SWEEP_TASKS, QUICK_SWEEP_SIZES, QUICK_TABLE_TASKS, QUICK_TABLE_SIZES, rounds=5)
        return cls()
