"""One unattended check of the GPU kernels on a machine with a CUDA GPU: build, test, sweep, time.

    python -m benchmarks.gpu_check                      # everything (sized for < 8 min on an H100/H200)
    python -m benchmarks.gpu_check --quick              # smaller sweep and table
    python -m benchmarks.gpu_check --quick --skip-build --skip-tests    # about a minute
    python -m benchmarks.gpu_check --out runs/gpu       # also runs/gpu.md and runs/gpu.csv
    make gpu-check ARGS="--quick --out runs/gpu"

The GPU backends (``cuda``: csrc/cuda built as ``gradsurg._cuda``; ``triton``:
gradsurg/kernels/triton) are checked elsewhere without a GPU only by the Triton interpreter and
by nvcc compiling. This script runs them for real, in five parts, and prints what someone can
paste back whole:

1. ``build``: ``pip install --no-build-isolation --no-deps -e .`` with the CUDA toolkit, which
   (setup.py) compiles ``gradsurg._cuda`` when torch has CUDA and a toolkit is found. A missing
   nvcc is reported and the rest goes on without the cuda backend (SKIP, not FAIL).
2. ``tests``: the kernel test files (tests/test_kernels_*.py, tests/kernels/, tests/triton/) in
   pytest subprocesses with ``TRITON_INTERPRET=0`` (the test conftests default it to 1), so the
   Triton kernels compile for the GPU and the conformance suite runs cuda and triton on CUDA
   tensors. (tests/test_cuda_compile.py, nvcc compiling without a GPU, is left out: the build
   compiles the same kernels.)
3. ``sweep``: every GPU backend against the float64 oracle (:mod:`gradsurg.kernels.reference`)
   on the GPU: T ∈ {1,2,3,8,16,64,65}, P ∈ {1, 1000, 1e6}, fp32/bf16/fp16; J contiguous, with
   column stride 2 and column-major; ``gram``, ``combine_into`` (β = 0 and 1), ``flatten_into``
   and ``gram_lists`` of non-contiguous, stride-0, cast and missing (None) gradients; and rows of
   extreme scale (1e-30, 1e30, subnormal 2^-149 to 2^127 in fp32/bf16; 2^-24 to 2^15 in fp16)
   where the Gram must match the float64 reference over the dtype's whole finite range.
   Tolerances (those of tests/kernels/test_conformance.py): Gram entry (i, j) within
   1e-5·√(G_ii·G_jj); combine within c·(Σ_t |w_t|·|J_tk| + |β|·|out_k|) with c = 8·2⁻²⁴ (fp32),
   2⁻⁹ (fp16), 2⁻⁶ (bf16) plus (T+2)·2⁻²⁴ for the float32 sum over T rows; flatten bit for bit.
4. ``table``: milliseconds (CUDA events, median of rounds that each last ≥ 20 ms), GB/s and the
   fraction of the device's memory bandwidth, both as measured by a device-to-device copy in the
   same run and as the theoretical peak from NVML (max memory clock × bus width × 2), for gram,
   combine, flatten and a whole step (flatten + gram + PCGrad weights + combine), per backend
   (cuda, triton and the torch reference on the GPU), T ∈ {2,4,8,16}, P ∈ {1e6,1e7,1e8}, fp32,
   plus bf16 for gram and combine. Cases that do not fit in free GPU memory are skipped with a
   note; working sets that fit in L2 are marked (their GB/s can exceed DRAM bandwidth).
5. ``batched``: ``batch_tasks=True`` (the T per-task backward passes as one vmapped call) against
   one pass per task on the shared-input transformer of ``benchmarks.compare_cheap``, T ∈ {2,4,8}:
   the update must agree to 1e-5 relative, and the times (naive, per-task floor, sequential,
   batched) say whether batching pays on this GPU (on two CPU cores it does not).

Bytes moved (e = bytes per element): gram eTP, combine e(T+1)P, flatten 2eTP, step e(4T+1)P.

Exit code: 0 when every part that ran passed (a part skipped for a stated reason does not fail),
1 when a build, test, correctness check or timing failed, 2 when there is no CUDA device (0 with
``--allow-no-gpu``: "no CUDA device: nothing to check").
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import importlib
import importlib.metadata
import io
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]

EXIT_OK, EXIT_FAIL, EXIT_NO_GPU = 0, 1, 2
NO_GPU_MESSAGE = "no CUDA device: nothing to check"
GPU_BACKENDS = ("cuda", "triton")

# ------------------------------------------------------------------------------------- grids

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

# -------------------------------------------------------------------------------- tolerances

GRAM_RTOL = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5, torch.float64: 1e-12}
COMBINE_C = {torch.float32: 8 * 2.0**-24, torch.float16: 2.0**-9, torch.bfloat16: 2.0**-6, torch.float64: 1e-12}

#: Row scales of the extreme-range Gram cases, per dtype: the dtype's whole finite range.
EXTREME_SCALES: dict[torch.dtype, dict[str, list[float]]] = {
    torch.float32: {
        "mixed": [1e-30, 1e30, 1.0, 2.0**-149, 2.0**-126, 1e-38, 1e38, 2.0**127],
        "all 1e-30": [1e-30] * 4,
        "all 1e30": [1e30] * 4,
        "all 2^-149": [2.0**-149] * 4,
        "all 2^127": [2.0**127] * 4,
    },
    torch.float16: {
        "mixed": [2.0**-24, 2.0**-14, 1.0, 2.0**15, 1e-3, 1e4],
        "all 2^-24": [2.0**-24] * 4,
        "all 2^15": [2.0**15] * 4,
    },
}
# bfloat16 has float32's exponent range but 7 mantissa bits: its smallest subnormal is 2^-133.
EXTREME_SCALES[torch.bfloat16] = {
    label.replace("2^-149", "2^-133"): [2.0**-133 if s == 2.0**-149 else s for s in scales]
    for label, scales in EXTREME_SCALES[torch.float32].items()
}


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}.get(
        dtype, str(dtype).replace("torch.", "")
    )


def fmt_size(size: int) -> str:
    """1 → '1', 1000 → '1e3', 1_000_000 → '1e6', 12345 → '12345'."""
    if size >= 1000 and size == 10 ** round(math.log10(size)):
        return f"1e{round(math.log10(size))}"
    return str(size)


def fmt_gbps(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def say(*parts: object) -> None:
    print(*parts, flush=True)


# ------------------------------------------------------------------------------- part results


@dataclass
class Part:
    """One part's verdict: PASS, FAIL or SKIP, and a one-line reason."""

    name: str
    status: str = "SKIP"
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        took = f" ({self.seconds:.0f} s)" if self.seconds >= 1 else ""
        return f"{self.name:<6} {self.status:<4}  {self.detail}{took}"


# ------------------------------------------------------------------------------ machine facts


def _run_text(cmd: Sequence[str], timeout: float = 20) -> str | None:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def nvcc_path() -> str | None:
    """The nvcc torch's extension builder would use (CUDA_HOME/bin/nvcc), else nvcc on PATH."""
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # pragma: no cover - torch without cpp_extension
        CUDA_HOME = None
    if CUDA_HOME:
        candidate = Path(CUDA_HOME) / "bin" / "nvcc"
        if candidate.exists():
            return str(candidate)
    return shutil.which("nvcc")


def nvcc_version(nvcc: str | None) -> str | None:
    if nvcc is None:
        return None
    text = _run_text([nvcc, "--version"])
    match = re.search(r"release ([\d.]+)", text or "")
    return match.group(1) if match else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvml_index(torch_index: int) -> int | str | None:
    """The NVML index (or UUID) of torch's device ``torch_index``, from CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return torch_index
    parts = [p.strip() for p in visible.split(",") if p.strip()]
    if torch_index >= len(parts):
        return None
    part = parts[torch_index]
    return int(part) if part.isdigit() else part if part.startswith("GPU-") else None


def nvml_facts(torch_index: int = 0, uuid: str | None = None) -> dict[str, Any]:
    """Driver version, CUDA driver version, max memory clock (MHz) and bus width (bits) via NVML.

    Read with ctypes from libnvidia-ml.so.1 (shipped with the driver), so no Python package is
    needed. Missing facts are left out; never raises.
    """
    facts: dict[str, Any] = {}
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return facts

    def call(function: str, *args: Any) -> bool:
        """NVML ``function(*args)`` returned NVML_SUCCESS (a missing symbol counts as failure)."""
        try:
            return getattr(nvml, function)(*args) == 0
        except (AttributeError, OSError, ValueError, ctypes.ArgumentError):
            return False

    if not call("nvmlInit_v2"):
        return facts
    try:
        buf = ctypes.create_string_buffer(96)
        if call("nvmlSystemGetDriverVersion", buf, ctypes.c_uint(96)):
            facts["driver"] = buf.value.decode(errors="replace")
        version = ctypes.c_int()
        if call("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(version)) or call(
                "nvmlSystemGetCudaDriverVersion", ctypes.byref(version)):
            facts["driver_cuda"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
        handle = ctypes.c_void_p()
        found = bool(uuid) and call("nvmlDeviceGetHandleByUUID",
                                    (uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}").encode(),
                                    ctypes.byref(handle))
        if not found:
            index = _nvml_index(torch_index)
            if isinstance(index, int):
                found = call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(handle))
            elif isinstance(index, str):
                found = call("nvmlDeviceGetHandleByUUID", index.encode(), ctypes.byref(handle))
        if found:
            clock, width = ctypes.c_uint(), ctypes.c_uint()
            nvml_clock_mem = 2  # nvmlClockType_t NVML_CLOCK_MEM
            if call("nvmlDeviceGetMaxClockInfo", handle, nvml_clock_mem, ctypes.byref(clock)) and clock.value:
                facts["mem_clock_mhz"] = clock.value
            if call("nvmlDeviceGetMemoryBusWidth", handle, ctypes.byref(width)) and width.value:
                facts["bus_width_bits"] = width.value
    finally:
        call("nvmlShutdown")
    return facts


def peak_bandwidth(facts: dict[str, Any]) -> float | None:
    """Theoretical memory bandwidth in bytes/s: 2 (double data rate) × clock × bus width / 8."""
    clock, width = facts.get("mem_clock_mhz"), facts.get("bus_width_bits")
    if not clock or not width:
        return None
    return 2.0 * clock * 1e6 * width / 8


def git_revision() -> str:
    rev = _run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if rev is None:
        return "unknown"
    dirty = _run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return f"{rev}{' (uncommitted changes)' if dirty else ''}"


@dataclass
class Gpu:
    """What the table needs to know about the device."""

    index: int
    name: str
    capability: tuple[int, int]
    memory_bytes: int
    l2_bytes: int
    peak_Bps: float | None


def machine_facts(gpu_index: int | None) -> tuple[list[tuple[str, str]], Gpu | None]:
    """(label, value) lines for the header, and the GPU's facts (None without a device)."""
    from .common import machine_facts as cpu_facts

    nvcc = nvcc_path()
    facts: list[tuple[str, str]] = [
        ("date", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("host", f"{platform.node()}; {platform.platform()}"),
        ("cpu", cpu_facts()),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", f"{torch.__version__}; built with CUDA {torch.version.cuda or 'none (CPU build)'}"),
        ("triton", package_version("triton") or "not installed"),
        ("nvcc", f"{nvcc_version(nvcc) or '?'} ({nvcc})" if nvcc
         else "not found (no CUDA toolkit: CUDA_HOME unset, no nvcc on PATH)"),
        ("gradsurg", f"{ROOT} at {git_revision()}"),
    ]
    if gpu_index is None:
        return facts, None
    props = torch.cuda.get_device_properties(gpu_index)
    uuid = getattr(props, "uuid", None)
    nvml = nvml_facts(gpu_index, str(uuid) if uuid is not None else None)
    peak = peak_bandwidth(nvml)
    smi = _run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    driver = nvml.get("driver") or (smi.splitlines()[0] if smi else "unknown")
    gpu = Gpu(
        index=gpu_index,
        name=props.name,
        capability=(props.major, props.minor),
        memory_bytes=props.total_memory,
        l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0),
        peak_Bps=peak,
    )
    peak_text = (f"{peak / 1e9:.0f} GB/s (NVML: {nvml['mem_clock_mhz']} MHz × {nvml['bus_width_bits']} bit × 2)"
                 if peak else "not obtainable (NVML's memory clock / bus width unavailable)")
    facts += [
        ("gpu", f"{props.name} (cuda:{gpu_index} of {torch.cuda.device_count()}), sm_{props.major}{props.minor}, "
                f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB, "
                f"L2 {gpu.l2_bytes / 2**20:.0f} MiB"),
        ("memory bandwidth", f"theoretical peak {peak_text}"),
        ("driver", f"{driver}; supports CUDA {nvml.get('driver_cuda', '?')}"),
        ("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")),
    ]
    return facts, gpu


def no_gpu_reason() -> str | None:
    """Why there is no CUDA device to check, or None if there is one."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device "
                f"(torch.cuda.is_available() is False; CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')})")
    return None


# -------------------------------------------------------------------------- subprocess runner


def run_logged(cmd: Sequence[str], log: Path, *, label: str, timeout: float, env: dict[str, str] | None = None,
               heartbeat: float = 30.0) -> tuple[int | None, float]:
    """Run ``cmd`` in the repository root with its output in ``log``; (exit code or None on
    timeout, seconds). Prints a progress line every ``heartbeat`` seconds."""
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        sink.write(f"$ {' '.join(cmd)}\n")
        sink.flush()
        proc = subprocess.Popen(list(cmd), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)
        next_beat = heartbeat
        while True:
            try:
                rc = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.perf_counter() - start
                if elapsed > timeout:
                    proc.kill()
                    proc.wait()
                    return None, elapsed
                if elapsed >= next_beat:
                    say(f"[{label}] still running ({elapsed:.0f} s)")
                    next_beat += heartbeat
    return rc, time.perf_counter() - start


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# ------------------------------------------------------------------------------------- build


def build_extension(log_dir: Path, timeout: float = 900) -> Part:
    """``pip install --no-build-isolation --no-deps -e .`` where torch has CUDA and nvcc exists.

    --no-deps: the environment already has torch (a CUDA build); nothing is fetched, so it also
    works offline. SKIP when torch has no CUDA or there is no toolkit; FAIL when the build or
    loading ``gradsurg._cuda`` fails.
    """
    part = Part("build")
    if torch.version.cuda is None:
        part.detail = f"torch {torch.__version__} has no CUDA: the cuda backend cannot be built"
        return part
    nvcc = nvcc_path()
    if nvcc is None:
        part.detail = ("no CUDA toolkit (no nvcc: set CUDA_HOME or put nvcc on PATH): gradsurg._cuda not built, "
                       "the cuda backend is not checked; triton still is")
        return part
    version = nvcc_version(nvcc)
    if version and torch.version.cuda and version.split(".")[0] != torch.version.cuda.split(".")[0]:
        say(f"[build] warning: nvcc {version} and torch's CUDA {torch.version.cuda} differ in major version; "
            "torch's extension builder may refuse")
    env = dict(os.environ)
    env.pop("GRADSURG_NO_EXT", None)
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    # The environment's own bin first: its ninja (pip's ninja package) lets the sources compile in parallel.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]
    log = log_dir / "build.log"
    has_ninja = shutil.which("ninja", path=env["PATH"]) is not None
    ninja = "ninja" if has_ninja else "no ninja (pip install ninja): the sources compile one at a time"
    say(f"[build] {' '.join(cmd[2:])} (nvcc {version or '?'}, {ninja}, MAX_JOBS={env['MAX_JOBS']}; log {log})")
    rc, seconds = run_logged(cmd, log, label="build", timeout=timeout, env=env)
    part.seconds = seconds
    if rc != 0:
        part.status = "FAIL"
        part.detail = f"pip install {'timed out' if rc is None else f'exited {rc}'}; see {log}"
        say(f"[build] FAILED; the end of {log}:\n{tail(log)}")
        return part
    importlib.invalidate_caches()
    from gradsurg.kernels import cuda as cuda_backend

    if not cuda_backend.available():
        part.status = "FAIL"
        part.detail = f"pip install succeeded but the cuda backend does not load: {cuda_backend.load_error()}"
        return part
    part.status = "PASS"
    part.detail = "gradsurg._cuda built and loaded"
    return part


# ------------------------------------------------------------------------------------- tests


def kernel_test_groups(root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """(label, pytest paths) of the kernel test files that exist, relative to ``root``."""
    files = sorted(str(p.relative_to(root)) for p in root.glob("tests/test_kernels_*.py"))
    groups = [("kernel files", files)] if files else []
    for folder in ("tests/kernels", "tests/triton"):
        if (root / folder).is_dir():
            groups.append((folder, [folder]))
    return groups


_SUMMARY = re.compile(r"\b(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b")


def pytest_counts(output: str) -> dict[str, int]:
    """Counts from pytest's closing line (``3 failed, 120 passed, 4 skipped in 9.1s``)."""
    lines = [line for line in output.splitlines() if re.search(r"\bin [\d.]+s\b", line)]
    if not lines:
        return {}
    counts: dict[str, int] = {}
    for number, word in _SUMMARY.findall(lines[-1]):
        key = {"error": "errors", "warning": "warnings"}.get(word, word)
        counts[key] = counts.get(key, 0) + int(number)
    return counts


def pytest_notes(output: str, limit: int = 10, width: int = 240) -> list[str]:
    """The FAILED / ERROR / SKIPPED lines of pytest's short summary (``-rfEs``), failures first,
    at most ``limit``, each cut to ``width`` characters."""
    lines = [line.strip() for line in output.splitlines()]
    notes = [line for word in ("FAILED", "ERROR", "SKIPPED") for line in lines if re.match(rf"^{word}\b", line)]
    notes = [n if len(n) <= width else n[: width - 1] + "…" for n in notes]
    if len(notes) > limit:
        notes = [*notes[:limit], f"... and {len(notes) - limit} more (see the log)"]
    return notes


def run_tests(log_dir: Path, timeout: float = 600) -> Part:
    """The kernel test files on the GPU, one pytest subprocess per group."""
    part = Part("tests")
    groups = kernel_test_groups()
    if not groups:
        part.detail = "no kernel test files found under tests/"
        return part
    # "0", not unset: tests/conftest.py and tests/triton/conftest.py set TRITON_INTERPRET=1 when
    # it is absent; "0" keeps triton compiling for the GPU.
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONUNBUFFERED="1")
    failed, summaries = [], []
    start = time.perf_counter()
    for index, (label, paths) in enumerate(groups):
        log = log_dir / f"tests-{index}-{re.sub(r'[^A-Za-z0-9]+', '_', label)}.log"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *paths]
        say(f"[tests] {label}: pytest {' '.join(paths)} (TRITON_INTERPRET=0; log {log})")
        rc, seconds = run_logged(cmd, log, label=f"tests {label}", timeout=timeout, env=env)
        output = log.read_text(errors="replace") if log.exists() else ""
        counts = pytest_counts(output)
        count_text = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no summary line"
        ok = rc == 0
        verdict = "ok" if ok else ("TIMED OUT" if rc is None else f"FAILED (pytest exit {rc})")
        say(f"[tests] {label}: {verdict}: {count_text} ({seconds:.0f} s)")
        for note in pytest_notes(output):
            say(f"[tests]   {note}")
        if not ok:
            failed.append(label)
            if rc not in (0, 1):
                say(f"[tests] the end of {log}:\n{tail(log, 30)}")
        summaries.append(f"{label}: {count_text}")
    part.seconds = time.perf_counter() - start
    part.status = "FAIL" if failed else "PASS"
    part.detail = ("failed: " + ", ".join(failed) + "; " if failed else "") + "; ".join(summaries)
    return part


# ------------------------------------------------------------------------- correctness sweep


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


def gram_error(got: Tensor, exact: Tensor) -> float:
    """Worst |G − G_exact| / √(G_ii·G_jj) over the entries (exact zeros where that scale is 0);
    inf when the dtype is not float64, the shape differs, or the NaN / non-finite pattern does."""
    if got.dtype != torch.float64 or got.shape != exact.shape:
        return math.inf
    got = got.to(exact.device)
    if not torch.equal(torch.isnan(got), torch.isnan(exact)):
        return math.inf
    finite = torch.isfinite(exact)
    if not torch.equal(torch.isfinite(got), finite):
        return math.inf
    if got.numel() == 0:
        return 0.0
    diag = exact.diagonal().abs()
    scale = torch.sqrt(diag[:, None] * diag[None, :])
    err = torch.where(finite, (got - exact).abs(), torch.zeros_like(got))
    inf = torch.full_like(err, math.inf)
    ratio = torch.where(scale > 0, err / torch.where(scale > 0, scale, 1.0), torch.where(err > 0, inf, 0.0))
    return float(ratio.max().item())


def combine_tolerance(dtype: torch.dtype, num_tasks: int) -> float:
    """c in |got − exact| ≤ c·(Σ|w||J| + |β||out|): the dtype's rounding of weights and result, plus
    a float32 sum over ``num_tasks`` rows."""
    return COMBINE_C[dtype] + (num_tasks + 2) * 2.0**-24


def combine_error(got: Tensor, start: Tensor | None, matrix: Tensor, weights: Tensor, beta: float) -> float:
    """Worst |got − exact| / (c·(Σ_t |w_t||J_tk| + |β||start_k|)) against the float64 oracle."""
    j = matrix.to(torch.float64)
    w = weights.to(device=j.device, dtype=torch.float64)
    exact = torch.zeros(j.shape[1], dtype=torch.float64, device=j.device)
    if start is not None:
        exact.copy_(start)
    from gradsurg.kernels import reference

    reference.combine_into(exact, j, w, beta=beta)
    bound = w.abs() @ j.abs()
    if beta != 0.0 and start is not None:
        bound = bound + abs(beta) * start.to(torch.float64).abs()
    tol = combine_tolerance(matrix.dtype, matrix.shape[0]) * bound
    got64 = got.to(device=j.device, dtype=torch.float64)
    if got64.shape != exact.shape or not bool(torch.isfinite(got64).all()):
        return math.inf
    if got64.numel() == 0:
        return 0.0
    err = (got64 - exact).abs()
    inf = torch.full_like(err, math.inf)
    ratio = torch.where(tol > 0, err / torch.where(tol > 0, tol, 1.0), torch.where(err > 0, inf, 0.0))
    return float(ratio.max().item())


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def make_matrix(num_tasks: int, size: int, dtype: torch.dtype, device: torch.device, layout: str,
                seed: int = 0) -> Tensor:
    """J (T, P) with correlated rows, laid out as ``layout``: "contiguous", "strided" (column
    stride 2) or "column-major" (strides (1, T)); drawn, rounded to ``dtype``, then viewed."""
    gen = _generator(device, seed)
    width = 2 * size if layout == "strided" else size
    shared = torch.randn(1, width, generator=gen, device=device)
    rows = (0.6 * shared + torch.randn(num_tasks, width, generator=gen, device=device) + 0.1).to(dtype)
    if layout == "contiguous":
        return rows
    if layout == "strided":
        return rows[:, ::2]
    if layout == "column-major":
        return rows.T.contiguous().T
    raise ValueError(f"unknown layout {layout!r}")


def scaled_rows(scales: Sequence[float], size: int, dtype: torch.dtype, device: torch.device, seed: int = 0,
                pairs: bool = False) -> Tensor:
    """Row t uniform in [-1, 1)·scales[t], rounded to ``dtype`` (subnormals included). With
    ``pairs``, odd rows are the mean of their row and the one before, so off-diagonals are large."""
    gen = _generator(device, seed)
    base = torch.rand(len(scales), size, generator=gen, dtype=torch.float64, device=device) * 2 - 1
    if pairs:
        base[1::2] = 0.5 * (base[0::2][: base[1::2].shape[0]] + base[1::2])
    scale = torch.tensor(list(scales), dtype=torch.float64, device=device)[:, None]
    return (base * scale).to(dtype)


def param_specs(size: int) -> list[tuple[tuple[int, ...], str]]:
    """Parameter shapes totalling ``size`` elements, each with the layout its gradient takes:
    transposed, strided, stride-0, another dtype (cast), missing (None), contiguous."""
    if size < 6:
        kinds = ["strided", "expand", "none", "cast", "contiguous"]
        return [((1,), kinds[i]) for i in range(size)]
    side = max(1, math.isqrt(size // 4))
    specs: list[tuple[tuple[int, ...], str]] = [((side, side), "transposed")]
    rest = size - side * side
    part = max(1, rest // 5)
    for kind in ("strided", "expand", "cast", "none"):
        specs.append(((part,), kind))
        rest -= part
    specs.append(((rest,), "contiguous"))
    return [s for s in specs if math.prod(s[0]) > 0]


def make_grads(num_tasks: int, size: int, dtype: torch.dtype, device: torch.device, seed: int = 1,
               ) -> tuple[list[tuple[int, ...]], list[list[Tensor | None]]]:
    """(shapes, grads[t][k]): per-task gradients of the parameters of :func:`param_specs`."""
    gen = _generator(device, seed)
    specs = param_specs(size)
    other = torch.float64 if dtype == torch.float32 else torch.float32

    def one(shape: tuple[int, ...], kind: str) -> Tensor | None:
        n = math.prod(shape)
        if kind == "none":
            return None
        if kind == "transposed":
            return torch.randn(shape[::-1], generator=gen, device=device).to(dtype).T
        if kind == "strided":
            return torch.randn(2 * n, generator=gen, device=device).to(dtype)[::2].view(shape)
        if kind == "expand":
            return torch.randn(1, generator=gen, device=device).to(dtype).expand(n).view(shape)
        if kind == "cast":
            return torch.randn(shape, generator=gen, device=device).to(other)
        return torch.randn(shape, generator=gen, device=device).to(dtype)

    return [s for s, _ in specs], [[one(s, k) for s, k in specs] for _ in range(num_tasks)]


def row_views(row: Tensor, shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
    views, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        views.append(row[offset: offset + n].view(shape))
        offset += n
    return views


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
    from gradsurg.kernels import reference

    device = matrix.device
    num_tasks, size = matrix.shape
    exact = reference.gram(matrix.to(torch.float64))
    gen = _generator(device, seed + 7)
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
    from gradsurg.kernels import reference

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
    from gradsurg.kernels import reference

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


# -------------------------------------------------------------------------------------- table


def bytes_moved(op: str, num_tasks: int, size: int, element: int) -> int:
    """Bytes an operation must move: gram eTP, combine e(T+1)P, flatten 2eTP, step e(4T+1)P."""
    return element * size * {"gram": num_tasks, "combine": num_tasks + 1, "flatten": 2 * num_tasks,
                              "step": 4 * num_tasks + 1}[op]


def time_call(fn: Callable[[], object], device: torch.device, *, rounds: int = 7, min_round_s: float = 0.02) -> float:
    """Median seconds per call of ``fn``: CUDA events around rounds of calls on a GPU (perf_counter
    on CPU), each round lasting ≥ ``min_round_s``, after a warm-up call (compiles, caches)."""
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    fn()
    sync()
    begin = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - begin, 1e-7)
    inner = max(1, min(10_000, math.ceil(min_round_s / once)))
    times = []
    for _ in range(rounds):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / inner)
        else:
            begin = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - begin) / inner)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, num_bytes: int, *, rounds: int = 7) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted, as STREAM does)."""
    src = torch.ones(num_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = time_call(lambda: dst.copy_(src), device, rounds=rounds)
    return 2 * (num_bytes // 4) * 4 / seconds


def _table_grads(num_tasks: int, size: int, dtype: torch.dtype, device: torch.device,
                 num_params: int = 10) -> tuple[list[int], list[list[Tensor]]]:
    sizes = [size // num_params] * num_params
    sizes[-1] += size - sum(sizes)
    return sizes, [[torch.randn(n, device=device, dtype=dtype) for n in sizes] for _ in range(num_tasks)]


def free_bytes(device: torch.device) -> int | None:
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
                param_sizes, grads = _table_grads(num_tasks, size, dtype, device) if with_grads else ([], [])
                views = [list(row.split(param_sizes)) for row in matrix] if param_sizes else []
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


# --------------------------------------------------------------------------------------- main


def _grid(values: Sequence[int]) -> str:
    return "{" + ", ".join(fmt_size(v) for v in values) + "}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller sweep (T ∈ {_grid(QUICK_SWEEP_TASKS)}, P ∈ {_grid(QUICK_SWEEP_SIZES)}) and "
                             f"table (T ∈ {_grid(QUICK_TABLE_TASKS)}, P ∈ {_grid(QUICK_TABLE_SIZES)}), fewer rounds; "
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
    from gradsurg.kernels.dispatch import get_backend

    found: dict[str, ModuleType] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            found[name] = get_backend(name, device)  # type: ignore[assignment]
        except (RuntimeError, ImportError) as exc:
            missing[name] = str(exc)
    return found, missing


def write_outputs(out: Path, facts: Sequence[tuple[str, str]], parts: Sequence[Part], rows: Sequence[dict[str, Any]],
                  notes: Sequence[str], failures: Sequence[Check], extra: dict[str, Any]) -> tuple[Path, Path]:
    """FILE.md (facts, summary, sweep failures, table, notes) and FILE.csv (the table)."""
    md_path, csv_path = out.with_suffix(".md"), out.with_suffix(".csv")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# gradsurg GPU check", "", *[f"- **{k}**: {v}" for k, v in facts], "", "## Summary", "", "```",
             *[p.line() for p in parts], "```", ""]
    if failures:
        lines += ["## Sweep failures", "", *[f"- {c.line()}" for c in failures[:200]], ""]
    lines += ["## Kernel table", "", format_markdown(rows) if rows else "(no timings)", ""]
    if notes:
        lines += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    md_path.write_text("\n".join(lines))
    csv_path.write_text(format_csv(rows, extra))
    return md_path, csv_path


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
        if args.quick:
            return cls(QUICK_SWEEP_TASKS, QUICK_SWEEP_SIZES, QUICK_TABLE_TASKS, QUICK_TABLE_SIZES, rounds=5)
        return cls()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; returns the exit code (see the module docstring)."""
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
    sweep_part = Part("sweep")
    result = SweepResult()
    start = time.perf_counter()
    if not found:
        sweep_part.status = "FAIL"
        sweep_part.detail = "no GPU backend runs here, nothing was checked"
    else:
        result = sweep(found, device, tasks=plan.sweep_tasks, sizes=plan.sweep_sizes)
        counts = result.by_backend()
        sweep_part.status = "FAIL" if result.failures() or result.broken else "PASS"
        sweep_part.detail = ", ".join(f"{k} {ok}/{n} within tolerance (worst {w:.2g}× tol)"
                                      for k, (n, ok, w) in counts.items())
        if result.broken:
            sweep_part.detail += f"; stopped, CUDA context broken: {result.broken}"
    for name, why in missing.items():
        if name == "cuda" and build.status == "PASS":  # built, yet it does not run
            sweep_part.status = "FAIL"
        sweep_part.detail += f"; {name} NOT CHECKED ({why})"
    sweep_part.detail = sweep_part.detail.lstrip("; ")
    sweep_part.seconds = time.perf_counter() - start
    parts.append(sweep_part)

    # 4. table
    say("\n== 4. kernel table ==")
    table_part, rows, notes = Part("table"), [], []
    start = time.perf_counter()
    if result.broken:
        table_part.detail = "not run: the CUDA context is broken"
    else:
        try:
            table_part, rows, notes = run_table(device, gpu, plan)
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


def run_table(device: torch.device, gpu: Gpu, plan: Plan) -> tuple[Part, list[dict[str, Any]], list[str]]:
    """The copy bandwidth, then :func:`bench` over the plan's grid; (part, rows, notes)."""
    part = Part("table")
    backends, missing = _backends(device, plan.table_backends)
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


def run_batched(device: torch.device, plan: Plan) -> tuple[Part, list[dict[str, Any]]]:
    """Section 5 of benchmarks.compare on the GPU: the transformer's naive step, per-task floor,
    exact surgery one pass per task and batched (``batch_tasks=True``), T in the plan's table
    tasks up to 8. FAIL if the batched update differs from the sequential one by more than 1e-5
    relative (the same arithmetic in other kernels); the CPU measured batching slower, and this
    is where its GPU speed is first measured."""
    from .compare_cheap import run as run_cheap

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
    from .compare_cheap import table

    return table(list(rows))


if __name__ == "__main__":
    sys.exit(main())
