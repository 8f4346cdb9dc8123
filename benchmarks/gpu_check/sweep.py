"""Part 3, ``sweep``: every GPU backend against the float64 oracle over T, P, dtypes and layouts —
gram, combine_into (β = 0 and 1), flatten_into and gram_lists, and the Gram at extreme scales."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import Tensor

from gradsurg._tolerances import GRAM_RTOL
from gradsurg.kernels import reference

from .inputs import EXTREME_SCALES, generator, make_grads, make_matrix, row_views, scaled_rows
from .oracle import combine_error, gram_error
from .output import dtype_name, fmt_size, say
from .plan import LAYOUTS, SWEEP_DTYPES, SWEEP_SIZES, SWEEP_TASKS, Plan
from .verdict import Part

__all__ = [
    "BrokenContext",
    "Check",
    "SweepResult",
    "check_extremes",
    "check_list_ops",
    "check_matrix_ops",
    "run_sweep",
    "sweep",
]


@dataclass
class Check:
    """One comparison with the oracle: ``worst`` is the largest error in units of the tolerance
    (≤ 1 passes; inf for a wrong NaN/inf pattern, shape, dtype, or an exception)."""

    backend: str
    op: str
    case: str
    worst: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.worst <= 1.0

    def line(self) -> str:
        why = f"; {self.detail}" if self.detail else ""
        return f"{self.backend} {self.op} {self.case}: {self.worst:.3g}× tolerance{why}"


class BrokenContext(RuntimeError):
    """A CUDA error that leaves the context unusable: nothing more can run on the GPU."""


def _guard(device: torch.device, fn: Callable[[], float]) -> tuple[float, str]:
    """(fn(), "") or (inf, the exception); raises BrokenContext if the CUDA context is gone."""
    try:
        value = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return value, ""
    except Exception as exc:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if device.type == "cuda":
            try:
                torch.cuda.synchronize(device)
                torch.zeros(1, device=device).item()
            except Exception as sticky:
                raise BrokenContext(f"{message} (then: {sticky})") from exc
        return math.inf, message


def check_matrix_ops(backends: dict[str, ModuleType], matrix: Tensor, case: str, *, seed: int = 0) -> list[Check]:
    """gram and combine_into (β = 0 and 1) of every backend on ``matrix`` against the oracle."""
    device = matrix.device
    num_tasks, size = matrix.shape
    exact = reference.gram(matrix.to(torch.float64))
    gen = generator(device, seed + 7)
    weights = torch.randn(num_tasks, generator=gen, dtype=torch.float64, device=device)
    start = torch.randn(size, generator=gen, device=device).to(matrix.dtype)
    checks = []
    for name, module in backends.items():
        value, why = _guard(device, lambda module=module: gram_error(module.gram(matrix), exact))
        checks.append(Check(name, "gram", case, value / GRAM_RTOL[matrix.dtype], why))
        for beta in (0.0, 1.0):
            def run(module: ModuleType = module, beta: float = beta) -> float:
                out = start.clone() if beta else torch.full_like(start, math.nan)  # β = 0 never reads out
                module.combine_into(out, matrix, weights, beta=beta)
                return combine_error(out, start if beta else None, matrix, weights, beta)

            value, why = _guard(device, run)
            checks.append(Check(name, f"combine β={beta:g}", case, value, why))
    return checks


def check_list_ops(backends: dict[str, ModuleType], num_tasks: int, size: int, dtype: torch.dtype,
                   device: torch.device, case: str) -> list[Check]:
    """flatten_into (bit for bit, neighbouring rows untouched) and gram_lists of non-contiguous,
    stride-0, cast and missing gradients, against the reference."""
    shapes, grads = make_grads(num_tasks, size, dtype, device)
    total = sum(math.prod(s) for s in shapes)
    expected = torch.full((num_tasks + 1, total), 7.0, dtype=dtype, device=device)  # + a row never written
    for t in range(num_tasks):
        reference.flatten_into(row_views(expected[t], shapes), grads[t])
    # gram_lists: every task lists the same tensors of J's dtype (no None, no cast).
    present = [k for k, g in enumerate(grads[0]) if g is not None]
    lists = [[g.to(dtype) for k, g in enumerate(row) if k in present and g is not None] for row in grads]
    exact = reference.gram(expected[:num_tasks].to(torch.float64)[:, _present_columns(shapes, present, device)])
    checks = []
    for name, module in backends.items():
        def flatten(module: ModuleType = module) -> float:
            matrix = torch.full_like(expected, 7.0)
            for t in range(num_tasks):
                module.flatten_into(row_views(matrix[t], shapes), grads[t])
            return 0.0 if torch.equal(matrix, expected) else math.inf

        value, why = _guard(device, flatten)
        checks.append(Check(name, "flatten", case, value, why or ("" if value == 0 else "differs from the reference")))
        value, why = _guard(device, lambda module=module: gram_error(module.gram_lists(lists), exact))
        checks.append(Check(name, "gram_lists", case, value / GRAM_RTOL[dtype], why))
    return checks


def _present_columns(shapes: Sequence[tuple[int, ...]], present: Sequence[int], device: torch.device) -> Tensor:
    """Column indices of J covered by the parameters ``present``."""
    starts, offset = [], 0
    for k, shape in enumerate(shapes):
        n = math.prod(shape)
        if k in present:
            starts.append(torch.arange(offset, offset + n, device=device))
        offset += n
    return torch.cat(starts) if starts else torch.zeros(0, dtype=torch.long, device=device)


def check_extremes(backends: dict[str, ModuleType], size: int, dtype: torch.dtype, device: torch.device) -> list[Check]:
    """Gram of rows at extreme scales (the dtype's whole finite range) against the float64 oracle."""
    checks = []
    cases = dict(EXTREME_SCALES[dtype])
    for label, scales in cases.items():
        rows = scaled_rows(scales, size, dtype, device, seed=len(label) + size % 97, pairs=label.startswith("all"))
        exact = reference.gram(rows.to(torch.float64))
        for name, module in backends.items():
            value, why = _guard(device, lambda m=module, rows=rows, exact=exact: gram_error(m.gram(rows), exact))
            checks.append(Check(name, "gram", f"{dtype_name(dtype)} P={fmt_size(size)} scales {label}",
                                value / GRAM_RTOL[dtype], why))
    if size >= 2:  # one row at 1e30 in its first half and 1e-30 in its second, another ordinary, one tiny
        top = 2.0**15 if dtype == torch.float16 else 1e30
        rows64 = scaled_rows([1.0, 1.0, 2.0**-24 if dtype == torch.float16 else 2.0**-140], size, torch.float64,
                             device, seed=5)
        rows64[0, : size // 2] *= top
        rows64[0, size // 2:] /= top
        rows = rows64.to(dtype)
        exact = reference.gram(rows.to(torch.float64))
        for name, module in backends.items():
            value, why = _guard(device, lambda module=module: gram_error(module.gram(rows), exact))
            checks.append(Check(name, "gram", f"{dtype_name(dtype)} P={fmt_size(size)} scale changes along a row",
                                value / GRAM_RTOL[dtype], why))
    return checks


@dataclass
class SweepResult:
    """The sweep's checks, and why it stopped early if the CUDA context broke."""

    checks: list[Check] = field(default_factory=list)
    broken: str | None = None

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def by_backend(self) -> dict[str, tuple[int, int, float]]:
        """backend → (checks, passed, worst in tolerance units)."""
        out: dict[str, tuple[int, int, float]] = {}
        for c in self.checks:
            n, ok, worst = out.get(c.backend, (0, 0, 0.0))
            out[c.backend] = (n + 1, ok + c.ok, max(worst, c.worst))
        return out


def sweep(backends: dict[str, ModuleType], device: torch.device, *, tasks: Sequence[int] = SWEEP_TASKS,
          sizes: Sequence[int] = SWEEP_SIZES, dtypes: Sequence[torch.dtype] = SWEEP_DTYPES,
          layouts: Sequence[str] = LAYOUTS, max_printed_failures: int = 40) -> SweepResult:
    """Every backend against the oracle over the grid; prints one progress line per (dtype, T)."""
    result = SweepResult()
    printed = 0

    def report(checks: list[Check], label: str, seconds: float) -> None:
        nonlocal printed
        result.checks.extend(checks)
        parts = []
        for name in backends:
            mine = [c for c in checks if c.backend == name]
            if mine:
                bad = sum(not c.ok for c in mine)
                worst = max(c.worst for c in mine)
                parts.append(f"{name} {len(mine) - bad}/{len(mine)} ok (worst {worst:.2g}× tol)")
        say(f"[sweep] {label}: {', '.join(parts)} ({seconds:.1f} s)")
        for c in checks:
            if not c.ok and printed < max_printed_failures:
                say(f"[sweep]   FAIL {c.line()}")
                printed += 1
                if printed == max_printed_failures:
                    say("[sweep]   (no more failures printed; all are in the summary count)")

    try:
        for dtype in dtypes:
            for num_tasks in tasks:
                start = time.perf_counter()
                checks: list[Check] = []
                for size in sizes:
                    for layout in layouts:
                        matrix = make_matrix(num_tasks, size, dtype, device, layout, seed=num_tasks * 31 + size % 1009)
                        case = f"{dtype_name(dtype)} T={num_tasks} P={fmt_size(size)} {layout}"
                        checks += check_matrix_ops(backends, matrix, case, seed=num_tasks)
                        del matrix
                    case = f"{dtype_name(dtype)} T={num_tasks} P={fmt_size(size)} non-contiguous grads"
                    checks += check_list_ops(backends, num_tasks, size, dtype, device, case)
                report(checks, f"{dtype_name(dtype)} T={num_tasks}", time.perf_counter() - start)
            start = time.perf_counter()
            checks = []
            for size in sizes:
                checks += check_extremes(backends, size, dtype, device)
            report(checks, f"{dtype_name(dtype)} extreme scales", time.perf_counter() - start)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    except BrokenContext as exc:
        result.broken = str(exc)
        say(f"[sweep] the CUDA context is broken, stopping: {exc}")
    return result


def run_sweep(backends: dict[str, ModuleType], missing: dict[str, str], device: torch.device, plan: Plan, *,
              built: bool) -> tuple[Part, SweepResult]:
    """The sweep part: :func:`sweep` of ``backends`` over the plan's grid, its verdict naming the
    GPU backends not checked (``missing``: name → why). FAIL when a check fails, when no backend
    runs, or when the cuda backend was ``built`` yet does not run."""
    part = Part("sweep")
    result = SweepResult()
    start = time.perf_counter()
    if not backends:
        part.status = "FAIL"
        part.detail = "no GPU backend runs here, nothing was checked"
    else:
        result = sweep(backends, device, tasks=plan.sweep_tasks, sizes=plan.sweep_sizes)
        counts = result.by_backend()
        part.status = "FAIL" if result.failures() or result.broken else "PASS"
        part.detail = ", ".join(f"{k} {ok}/{n} within tolerance (worst {w:.2g}× tol)"
                                for k, (n, ok, w) in counts.items())
        if result.broken:
            part.detail += f"; stopped, CUDA context broken: {result.broken}"
    for name, why in missing.items():
        if name == "cuda" and built:  # built, yet it does not run
            part.status = "FAIL"
        part.detail += f"; {name} NOT CHECKED ({why})"
    part.detail = part.detail.lstrip("; ")
    part.seconds = time.perf_counter() - start
    return part, result
