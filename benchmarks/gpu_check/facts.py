"""Machine facts for the report's header: host, Python, torch, triton, nvcc, the repository's
revision and, with a GPU, its properties, driver and theoretical memory bandwidth (NVML)."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._harness import machine_facts as cpu_facts
from .proc import ROOT, run_text

__all__ = [
    "Gpu",
    "git_revision",
    "machine_facts",
    "no_gpu_reason",
    "nvcc_path",
    "nvcc_version",
    "nvml_facts",
    "package_version",
    "peak_bandwidth",
]


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
    """The release of ``nvcc --version`` (``12.4``), None if it cannot tell."""
    if nvcc is None:
        return None
    text = run_text([nvcc, "--version"])
    match = re.search(r"release ([\d.]+)", text or "")
    return match.group(1) if match else None


def package_version(name: str) -> str | None:
    """The installed version of a distribution, None if it is not installed."""
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
    """The checkout's short revision, marked when tracked files have uncommitted changes."""
    rev = run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if rev is None:
        return "unknown"
    dirty = run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
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
    smi = run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
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
