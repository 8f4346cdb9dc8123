"""Timing and machine facts shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["machine_facts", "median_time", "stream_copy_bandwidth"]


def median_time(fn: Callable[[], object], *, repeat: int = 7, min_time: float = 0.2) -> float:
    """Median seconds of ``fn()`` over ``repeat`` rounds, after one warm-up call.

    Each round runs ``fn`` enough times to last ~``min_time / repeat`` so that sub-millisecond
    kernels are not measured at timer resolution.
    """
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(min_time / repeat / once))
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        rounds.append((time.perf_counter() - start) / inner)
    return statistics.median(rounds)


def stream_copy_bandwidth(num_bytes: int = 1 << 28) -> float:
    """STREAM-like copy bandwidth in bytes/s (read + write counted, as STREAM does)."""
    src = torch.ones(num_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), repeat=5)
    return 2 * num_bytes / seconds


def machine_facts() -> str:
    """One line: CPU, cores, torch threads, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
