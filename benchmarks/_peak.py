"""Peak resident memory of one case, measured in its own ``python -m benchmarks.memory`` process.

The parent side is :func:`measure` (used by section 4, :mod:`benchmarks.memory`, and by section
5, :mod:`benchmarks.compare_cheap`); the child side is :func:`peak_of`, which
``benchmarks.memory``'s entry point runs on the case it builds. This module imports no section:
the case builders live in ``benchmarks.memory``, which imports ``compare_cheap`` for its cases;
were :func:`measure` there too, ``compare_cheap`` would import ``memory`` back (a cycle).

How the peak is read: the child resets the kernel's high-water mark (``echo 5 >
/proc/self/clear_refs`` sets VmHWM back to the current RSS) after setting up the case and reads
it again after a few steps; without ``clear_refs`` (not Linux) the baseline is ``ru_maxrss``
after setup, which can only over-state it. MB here are MiB (2^20 bytes).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["MIB", "measure", "peak_of"]

MIB = 1 << 20
_ROOT = Path(__file__).resolve().parents[1]


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


def _reset_peak() -> str:
    """Reset the high-water mark; returns how the peak is read (for the note)."""
    gc.collect()
    try:
        # Freed setup memory kept by malloc would otherwise be reused by the step unseen.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def _peak_mib(how: str) -> float:
    if how == "VmHWM":
        return _vm_hwm_mib()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_of(step: Callable[[], None], size: int, steps: int = 3) -> dict:
    """In the child, after the case is set up: reset the peak, run ``steps`` steps; the JSON
    result of the subprocess: ``setup_mb``, ``peak_mb``, ``extra_mb``, ``P`` (``size``), ``how``."""
    how = _reset_peak()
    setup = _peak_mib(how)
    for _ in range(steps):
        step()
    peak = _peak_mib(how)
    return {"setup_mb": setup, "peak_mb": peak, "extra_mb": peak - setup, "P": size, "how": how}


def measure(section: str, spec: dict, timeout: float = 600.0) -> dict:
    """Run one case in a fresh ``python -m benchmarks.memory`` process; its JSON result
    (``peak_mb``, ``setup_mb``, ``extra_mb``, ``P``, ``how``).

    Raises:
        RuntimeError: the subprocess failed (its stderr's last lines are in the message).
    """
    env = dict(os.environ)
    # A fixed mmap threshold: glibc then maps every large tensor on its own and unmaps it when
    # freed, so resident memory follows the live tensors. With its default (a threshold that
    # grows after each large free) freed tensors stay in the heap and the peak wanders by
    # ±20 MiB from run to run on the same case.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", section, json.dumps(spec)],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"memory {section} {spec}: exit {proc.returncode}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
