"""Part 2, ``tests``: the kernel test files in pytest subprocesses, with Triton compiling for the
GPU; what pytest's output says (counts, failures, skips)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from .output import say
from .proc import ROOT, run_logged, tail
from .verdict import Part

__all__ = ["kernel_test_groups", "pytest_counts", "pytest_notes", "run_tests"]


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
