"""What the benchmark scripts share: one timer, the machine's facts and copy bandwidth, the bytes
each kernel must move, and the small pieces of a step that every section builds the same way.

Kept out of here on purpose, because they only look alike:

- ``compare_cheap`` times its variants in turns within each round (the machine's drift then hits
  them alike) and a ``refresh_every=k`` round as a whole cycle of k steps;
- ``solves`` measures *process* time over a budget (latency-bound host code on a shared machine);
- the sections' ``make_step`` builders: each builds the cases of its own section (its optimizer,
  its losses, its libraries); only the pieces below are common to them.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "bytes_moved",
    "copy_bandwidth",
    "flat_grad",
    "gradsurg_backend",
    "machine_facts",
    "median_time",
    "random_grads",
    "rel_diff",
    "restore",
    "snapshot",
    "split_rows",
    "split_sizes",
    "sum_backward",
    "synchronizer",
]

#: At most this many calls per round: a call measured at the timer's resolution (1e-7 s) would
#: otherwise ask for millions.
MAX_CALLS_PER_ROUND = 10_000

# ------------------------------------------------------------------------------------ timing


def synchronizer(device: torch.device | str | None) -> Callable[[], None]:
    """A function that waits for ``device``'s queued kernels (a no-op off CUDA): a timer must not
    stop while a GPU kernel it launched is still running."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda":
        return lambda: None
    return lambda: torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], object],
    *,
    repeat: int = 7,
    min_time: float = 0.2,
    device: torch.device | str | None = None,
    warmup: bool = True,
) -> float:
    """Median seconds per call of ``fn()`` over ``repeat`` rounds.

    With ``warmup`` (the default), one call first (lazy kernels, compiles, first allocations),
    then one timed call to size the rounds: each round runs ``fn`` enough times (at most
    :data:`MAX_CALLS_PER_ROUND`) to last at least ``min_time / repeat``, so that sub-millisecond
    calls are not measured at timer resolution. Without it, ``repeat`` single calls and nothing
    else (steps of seconds whose warm-up the caller already ran).

    On a CUDA ``device`` each round is timed with CUDA events around its calls and the warm-up
    calls are synchronised; elsewhere with ``time.perf_counter``.
    """
    sync = synchronizer(device)
    events = device is not None and torch.device(device).type == "cuda"
    inner = 1
    if warmup:
        fn()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        once = max(time.perf_counter() - start, 1e-7)
        inner = max(1, min(MAX_CALLS_PER_ROUND, math.ceil(min_time / repeat / once)))
    rounds = []
    for _ in range(repeat):
        if events:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            rounds.append(begin.elapsed_time(end) / 1e3 / inner)
        else:
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            rounds.append((time.perf_counter() - start) / inner)
    return statistics.median(rounds)


# ----------------------------------------------------------------------------- the machine


def copy_bandwidth(
    num_bytes: int = 1 << 28,
    *,
    device: torch.device | str = "cpu",
    repeat: int = 5,
    min_time: float = 0.2,
) -> float:
    """STREAM-like copy bandwidth of ``device`` in bytes/s (read + write counted, as STREAM does),
    copying ``num_bytes`` (rounded down to whole float32 elements) from one tensor into another."""
    src = torch.ones(num_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), repeat=repeat, min_time=min_time, device=device)
    return 2 * src.numel() * 4 / seconds


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
    return f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads"


def bytes_moved(op: str, num_tasks: int, size: int, element: int = 4) -> int:
    """Bytes a kernel of a surgery step must move, with ``element`` bytes per entry: gram reads J
    (eTP); combine reads J and writes the result (e(T+1)P); flatten reads the task gradients and
    writes J (2eTP); a whole step (flatten, gram, combine) is their sum (e(4T+1)P)."""
    per_entry = {"gram": num_tasks, "combine": num_tasks + 1, "flatten": 2 * num_tasks, "step": 4 * num_tasks + 1}
    return element * size * per_entry[op]


# ------------------------------------------------------------------------------- workloads


def split_sizes(size: int, num_params: int = 10) -> list[int]:
    """``num_params`` parameter sizes totalling ``size``: equal parts, the remainder in the last
    (the benchmarks' stand-in for a model's parameter list)."""
    sizes = [size // num_params] * num_params
    sizes[-1] += size - sum(sizes)
    return sizes


def random_grads(
    num_tasks: int,
    size: int,
    num_params: int = 10,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> list[list[Tensor]]:
    """``grads[t][k]``: standard-normal gradients of task t for parameter k, the parameters of
    :func:`split_sizes`. Drawn from torch's global generator, or from a generator on ``device``
    seeded with ``seed``."""
    gen = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    sizes = split_sizes(size, num_params)
    return [[torch.randn(n, generator=gen, dtype=dtype, device=device) for n in sizes] for _ in range(num_tasks)]


def split_rows(matrix: Tensor, sizes: Sequence[int]) -> list[list[Tensor]]:
    """``views[t][k]``: the slice of J's row t that parameter k's gradient flattens into."""
    return [list(row.split(list(sizes))) for row in matrix]


# ------------------------------------------------------------------------- pieces of a step


def gradsurg_backend(library: str) -> str | None:
    """The backend of a ``"gradsurg[<backend>]"`` library name, None for any other library."""
    if library.startswith("gradsurg[") and library.endswith("]"):
        return library[len("gradsurg[") : -1]
    return None


def sum_backward(losses: Iterable[Tensor]) -> None:
    """The naive multi-task backward every section measures against: ``sum(losses).backward()``."""
    torch.stack(list(losses)).sum().backward()


def flat_grad(params: Iterable[Tensor]) -> Tensor:
    """The parameters' ``.grad`` as one float64 vector (zeros where a gradient is missing): what
    the correctness checks compare."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double() for p in params])


def rel_diff(got: Tensor, ref: Tensor) -> float:
    """‖got − ref‖ / ‖ref‖ (the denominator floored at 1e-30, so a zero reference stays finite)."""
    return float((got - ref).norm() / ref.norm().clamp_min(1e-30))


def snapshot(params: Iterable[Tensor]) -> list[Tensor]:
    """Detached copies of the parameters' values, for :func:`restore`."""
    return [p.detach().clone() for p in params]


def restore(params: Iterable[Tensor], saved: Sequence[Tensor]) -> None:
    """Put the values of :func:`snapshot` back, so the next case starts from the same weights."""
    with torch.no_grad():
        for p, p0 in zip(params, saved):
            p.copy_(p0)
