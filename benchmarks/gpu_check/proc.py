"""Subprocesses of the check (pip, pytest, nvcc, git, nvidia-smi), run from the repository root."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .output import say

__all__ = ["ROOT", "run_logged", "run_text", "tail"]

#: The repository root: where pip installs from and pytest finds the test files.
ROOT = Path(__file__).resolve().parents[2]


def run_text(cmd: Sequence[str], timeout: float = 20) -> str | None:
    """``cmd``'s stripped stdout, or None if it cannot run, times out or exits non-zero."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


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
    """The last ``lines`` lines of a log ("" if it cannot be read)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])
