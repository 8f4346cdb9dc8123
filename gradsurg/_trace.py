"""The Gram trace: one record per applied surgery step, appended to a file as it happens.

Every Gram method is a function of the step's Gram matrix G (and, for some, the losses), so a
trace of G, the losses and the applied weights is enough to say what any other Gram method
would have done on the same gradients (:func:`gradsurg.replay`).

Format: JSON Lines (one UTF-8 JSON object per line), append-only. The first line is a header
``{"format": "gradsurg-trace", "version": 1}``; every other line is one applied step::

    {"step": 3, "method": "mean", "tasks": ["sst2", "aeslc"], "losses": [...],
     "gram": [[...], [...]], "weights": [...], "micro_batches": 2, "task_micro_batches": [1, 1],
     "group_grams": null, "group_weights": null, "reduction": "sum"}

Floats are written with Python's ``repr``, which round-trips float64 exactly. Each line is
flushed when written, so a killed run leaves every finished step readable; a last line cut
short by the kill is skipped by :func:`read_trace`. Steps skipped as non-finite, and steps
without a Gram matrix (loss-space methods, steps between refreshes), are not recorded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from ._stats import SurgeryStats

__all__ = ["FORMAT", "TraceStep", "TraceWriter", "read_trace"]

FORMAT = {"format": "gradsurg-trace", "version": 1}


@dataclass(frozen=True)
class TraceStep:
    """One recorded step (tensors float64 on the CPU).

    Attributes:
        step: the applied step's number (1 for the first).
        method: the method that was applied.
        tasks: the task names, in the order of the rows of ``gram``.
        losses: ``(T,)`` the step's losses (summed over its micro-batches).
        gram: ``(T, T)`` the Gram matrix of the task gradients of the shared parameters.
        weights: ``(T,)`` the applied weights (NaN for methods without weights).
        micro_batches: how many ``backward`` calls the step accumulated.
        task_micro_batches: per task, the micro-batches it came from.
        group_grams, group_weights: with ``groups=``, ``(G, T, T)`` and ``(G, T)``; else None.
        reduction: the step's ``reduction`` (``"mean"``: the weights include a 1/T).
    """

    step: int
    method: str
    tasks: tuple[str, ...]
    losses: Tensor
    gram: Tensor
    weights: Tensor
    micro_batches: int = 1
    task_micro_batches: tuple[int, ...] = ()
    group_grams: Tensor | None = None
    group_weights: Tensor | None = None
    reduction: str = "sum"


def _floats(t: Tensor | None) -> Any:
    if t is None:
        return None
    values = t.detach().to(device="cpu", dtype=torch.float64).tolist()
    return _jsonable(values)


def _jsonable(value: Any) -> Any:
    # JSON has no NaN or infinity: they are written as null and read back as NaN.
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value if math.isfinite(value) else None


def _tensor(value: Any) -> Tensor:
    def fill(v: Any) -> Any:
        return [fill(x) for x in v] if isinstance(v, list) else (math.nan if v is None else v)

    return torch.tensor(fill(value), dtype=torch.float64)


class TraceWriter:
    """Appends steps to a trace file (opened at the first record; the header is written when
    the file is new or empty).

    Args:
        path: the trace file; its folder is created.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
            if fresh:
                self._write(FORMAT)
        return self._file

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def record(self, step: int, stats: SurgeryStats, group_grams: Tensor | None = None, reduction: str = "sum") -> None:
        """Append one applied step (nothing for a step without a Gram matrix)."""
        if stats.gram is None or stats.skipped:
            return
        self._open()
        self._write(
            {
                "step": int(step),
                "method": stats.method,
                "tasks": list(stats.task_names),
                "losses": _floats(stats.losses),
                "gram": _floats(stats.gram),
                "weights": _floats(stats.weights),
                "micro_batches": int(stats.micro_batches),
                "task_micro_batches": list(stats.task_micro_batches),
                "group_grams": _floats(group_grams),
                "group_weights": _floats(stats.group_weights),
                "reduction": reduction,
            }
        )

    def close(self) -> None:
        """Close the file (it is reopened for appending at the next record)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None}


def read_trace(path: str | os.PathLike) -> list[TraceStep]:
    """The steps of a trace file, in order.

    A last line cut short (a run killed while writing it) is skipped; any other line that is not
    a step raises.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming ``trace``: not a gradsurg trace, or a damaged line before the last.
    """
    return list(_iter_trace(Path(path)))


def _iter_trace(path: Path) -> Iterator[TraceStep]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT["format"]:
        raise ValueError(f"trace: {path} is not a gradsurg trace (its first line is not the header)")
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                return  # the last line, cut short by a kill: every finished step is above it
            raise ValueError(f"trace: line {number} of {path} is damaged") from None
        yield TraceStep(
            step=int(record["step"]),
            method=str(record["method"]),
            tasks=tuple(record["tasks"]),
            losses=_tensor(record["losses"]),
            gram=_tensor(record["gram"]),
            weights=_tensor(record["weights"]),
            micro_batches=int(record.get("micro_batches", 1)),
            task_micro_batches=tuple(record.get("task_micro_batches") or ()),
            group_grams=None if record.get("group_grams") is None else _tensor(record["group_grams"]),
            group_weights=None if record.get("group_weights") is None else _tensor(record["group_weights"]),
            reduction=str(record.get("reduction", "sum")),
        )
