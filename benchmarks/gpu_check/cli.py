"""The command line: arguments, the checks before the parts (a GPU, the environment), the five
parts in order, the summary and the exit code."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from . import __doc__ as OVERVIEW
from .build import build_extension
from .facts import Gpu, machine_facts, no_gpu_reason
from .kernel_tests import run_tests
from .output import fmt_grid, say
from .plan import QUICK_SWEEP_SIZES, QUICK_SWEEP_TASKS, QUICK_TABLE_SIZES, QUICK_TABLE_TASKS, Plan
from .verdict import EXIT_FAIL, EXIT_NO_GPU, EXIT_OK, NO_GPU_MESSAGE, Part

__all__ = ["main", "parse_args", "run_parts"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's flags (--help prints the package docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=OVERVIEW,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller sweep (T ∈ {fmt_grid(QUICK_SWEEP_TASKS)}, P ∈ {fmt_grid(QUICK_SWEEP_SIZES)}) and "
                             f"table (T ∈ {fmt_grid(QUICK_TABLE_TASKS)}, P ∈ {fmt_grid(QUICK_TABLE_SIZES)}), fewer rounds; "
                             "build and tests as without it (add --skip-build --skip-tests for a ~1 min run)")
    parser.add_argument("--skip-build", action="store_true", help="use the installed gradsurg._cuda as it is")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the kernel test files")
    parser.add_argument("--out", metavar="FILE", type=Path,
                        help="also write FILE.md (facts, summary, table) and FILE.csv (the table); "
                             "logs go to FILE.logs/")
    parser.add_argument("--allow-no-gpu", action="store_true",
                        help=f"exit 0 instead of 2 when there is no CUDA device ('{NO_GPU_MESSAGE}')")
    return parser.parse_args(argv)


def _backends(device: torch.device, names: Sequence[str]) -> tuple[dict[str, ModuleType], dict[str, str]]:
    """(name → module) of those that run on ``device``, and (name → why not) of the others."""
    from gradsurg.kernels import get_backend

    found: dict[str, ModuleType] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            found[name] = get_backend(name, device)  # type: ignore[assignment]
        except (RuntimeError, ImportError) as exc:
            missing[name] = str(exc)
    return found, missing


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; returns the exit code (see the package docstring)."""
    args = parse_args(argv)
    began = time.perf_counter()
    reason = no_gpu_reason()
    facts, gpu = machine_facts(None if reason else torch.cuda.current_device())
    say("== gradsurg GPU check ==")
    for key, value in facts:
        say(f"{key + ':':<22}{value}")
    if reason is not None or gpu is None:
        say(f"\n{NO_GPU_MESSAGE} ({reason})")
        if args.allow_no_gpu:
            say("exit 0 (--allow-no-gpu)")
            return EXIT_OK
        say(f"exit {EXIT_NO_GPU}: run this on a machine with a CUDA GPU, with a Python whose torch is a CUDA "
            f"build and sees it ({sys.executable} here), e.g. `python -m benchmarks.gpu_check`; "
            "or pass --allow-no-gpu")
        return EXIT_NO_GPU
    if gpu.capability[0] not in (8, 9):
        say(f"note: setup.py compiles gradsurg._cuda for sm_80 and sm_90 only; this GPU is "
            f"sm_{gpu.capability[0]}{gpu.capability[1]}, so the cuda backend may have no kernel image for it")
    if os.environ.pop("GRADSURG_NO_EXT", None) == "1":
        say("note: GRADSURG_NO_EXT=1 removed: this check builds and loads the extensions")
    interp = os.environ.pop("TRITON_INTERPRET", None)
    if interp not in (None, "", "0"):
        say(f"note: TRITON_INTERPRET={interp} removed, so Triton compiles for the GPU")
        if "triton" in sys.modules:  # pragma: no cover - only if imported before main()
            say("warning: triton was imported before; its kernels may still be interpreted")
    return run_parts(args, torch.device("cuda", gpu.index), gpu, facts, Plan.from_args(args), began)


def run_parts(args: argparse.Namespace, device: torch.device, gpu: Gpu, facts: list[tuple[str, str]], plan: Plan,
              began: float) -> int:
    """Build, tests, sweep and table on ``device``; prints the summary and returns the exit code.

    ``device`` is the GPU; the tests of this script pass a CPU device and CPU backends.
    """
    if args.out:
        log_dir = args.out.with_suffix(".logs")
        log_dir.mkdir(parents=True, exist_ok=True)
    else:
        log_dir = Path(tempfile.mkdtemp(prefix="gradsurg-gpu-check-"))
    say(f"{'logs:':<22}{log_dir}\n")

    parts: list[Part] = []
    # 1. build
    if args.skip_build:
        parts.append(Part("build", "SKIP", "--skip-build"))
    else:
        say("== 1. build ==")
        parts.append(build_extension(log_dir))
    build = parts[-1]
    # Parts 3 to 5 and the report import gradsurg: only after the build, so that they load the
    # extension it built.
    from .batched import cheap_table, run_batched
    from .report import write_outputs
    from .sweep import run_sweep
    from .table import format_markdown, run_table

    found, missing = _backends(device, plan.sweep_backends)
    for name in found:
        say(f"[backends] {name}: available")
    for name, why in missing.items():
        say(f"[backends] {name}: UNAVAILABLE: {why}")

    # 2. tests
    if args.skip_tests:
        parts.append(Part("tests", "SKIP", "--skip-tests"))
    else:
        say("\n== 2. tests (kernel test files on the GPU) ==")
        parts.append(run_tests(log_dir))

    # 3. sweep
    say("\n== 3. correctness sweep against the float64 reference ==")
    sweep_part, result = run_sweep(found, missing, device, plan, built=build.status == "PASS")
    parts.append(sweep_part)

    # 4. table
    say("\n== 4. kernel table ==")
    table_part, rows, notes = Part("table"), [], []
    start = time.perf_counter()
    if result.broken:
        table_part.detail = "not run: the CUDA context is broken"
    else:
        try:
            table_part, rows, notes = run_table(device, gpu, plan, *_backends(device, plan.table_backends))
        except Exception as exc:
            table_part.status = "FAIL"
            table_part.detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    table_part.seconds = time.perf_counter() - start
    parts.append(table_part)
    if rows:
        say("\n" + format_markdown(rows))
    for note in notes:
        say(f"note: {note}")

    # 5. batched per-task backward (batch_tasks=) against one pass per task, on the GPU
    say("\n== 5. cheap paths: batch_tasks on the GPU ==")
    cheap_part = Part("batched")
    start = time.perf_counter()
    if result.broken:
        cheap_part.detail = "not run: the CUDA context is broken"
    else:
        try:
            cheap_part, cheap_rows = run_batched(device, plan)
            say("\n" + cheap_table(cheap_rows))
        except Exception as exc:
            cheap_part.status = "FAIL"
            cheap_part.detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    cheap_part.seconds = time.perf_counter() - start
    parts.append(cheap_part)

    # summary
    failed = any(p.status == "FAIL" for p in parts)
    say(f"\n== summary ({time.perf_counter() - began:.0f} s) ==")
    for part in parts:
        say(part.line())
    for check in result.failures()[:20]:
        say(f"  sweep FAIL {check.line()}")
    if args.out:
        md_path, csv_path = write_outputs(args.out, facts, parts, rows, notes, result.failures(),
                                          {"device": gpu.name})
        say(f"written: {md_path}, {csv_path}")
    code = EXIT_FAIL if failed else EXIT_OK
    say(f"result: {'FAIL' if failed else 'PASS'} (exit {code})")
    return code
