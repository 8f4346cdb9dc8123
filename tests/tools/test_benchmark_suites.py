"""Smoke tests of the pytest-benchmark kernel suites (benchmarks/test_bench_kernels.py).

The suites run in a subprocess on the quick grid (``GRADSURG_BENCH_QUICK=1``: T ∈ {2, 4},
P ∈ {1e3, 1e4}, fp32 and bf16, five operations, four backends: 160 cases).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="the benchmark suites need pytest-benchmark")

from gradsurg.kernels import cpp

ROOT = Path(__file__).resolve().parents[2]
SUITE = "benchmarks/test_bench_kernels.py"
OPS = ("gram", "combine", "flatten", "step", "backward")
SHAPES = 2 * 2 * 2  # T × P × dtype on the quick grid
GPU_CASES = 2 * len(OPS) * SHAPES  # triton and cuda
CPU_CASES = 2 * len(OPS) * SHAPES  # torch and cpp
NO_GPU = "needs a CUDA GPU (none on this machine)"
EXTRA_INFO = {"T", "P", "dtype", "backend", "device", "threads", "torch", "bytes_moved"}


def _run_suite(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GRADSURG_BENCH_QUICK="1")
    # tests/conftest.py sets the Triton interpreter for this process; benchmarks refuse it.
    env.pop("TRITON_INTERPRET", None)
    # The suite is its own pytest session: an xdist worker's variables (make test runs two)
    # would make pytest-benchmark think it is distributed and skip the timing it checks.
    for name in [k for k in env if k.startswith("PYTEST_XDIST_")]:
        env.pop(name)
    cmd = [sys.executable, "-m", "pytest", SUITE, "-q", "-p", "no:cacheprovider", *args]
    result = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _count(output: str, word: str) -> int:
    match = re.search(rf"(\d+) {word}", output)
    return int(match.group(1)) if match else 0


def test_suite_runs_and_skips_what_this_machine_lacks() -> None:
    """Every case passes or is skipped with its reason; GPU backends skip on a CPU-only machine."""
    out = _run_suite("--benchmark-disable", "-rs").stdout
    passed, skipped = _count(out, "passed"), _count(out, "skipped")
    assert passed >= CPU_CASES // 2, out  # the torch backend always runs
    assert passed + skipped == CPU_CASES + GPU_CASES, out
    if cpp.available():
        assert passed >= CPU_CASES, out
    else:
        assert "extension gradsurg._C" in out, out
    if not torch.cuda.is_available():
        gpu_skips = sum(
            int(n) for n in re.findall(rf"SKIPPED \[(\d+)\] .*: {re.escape(NO_GPU)}", out)
        )
        assert gpu_skips == GPU_CASES, out


def test_suite_records_extra_info_and_groups(tmp_path: Path) -> None:
    """Timed with one short round each (one T and P, to stay fast): the JSON has every case's
    group and extra_info."""
    report = tmp_path / "bench.json"
    _run_suite(
        "-k",
        "T4-P1e4",
        f"--benchmark-json={report}",
        "--benchmark-min-rounds=1",
        "--benchmark-max-time=0.0001",
        "--benchmark-warmup=off",
    )
    benchmarks = json.loads(report.read_text())["benchmarks"]
    cpu_backends = 1 + cpp.available()
    assert len(benchmarks) >= len(OPS) * 2 * cpu_backends  # every op, both dtypes, CPU backends
    for bench in benchmarks:
        info = bench["extra_info"]
        assert info.keys() >= EXTRA_INFO, bench["name"]
        assert info["torch"] == torch.__version__ and info["threads"] >= 1
        assert info["GBps"] > 0
        op = bench["name"].split("[")[0].removeprefix("test_")
        assert op in OPS
        size = "1e3" if info["P"] == 1000 else "1e4"
        assert bench["group"] == f"{op} T={info['T']} P={size} {info['dtype']}"
    backends = {bench["extra_info"]["backend"] for bench in benchmarks}
    assert "torch" in backends and ("cpp" in backends) == cpp.available()
    assert {bench["group"].split()[0] for bench in benchmarks} == set(OPS)
    gram = next(b["extra_info"] for b in benchmarks if b["group"] == "gram T=4 P=1e4 bf16")
    assert gram["bytes_moved"] == 2 * 4 * 10_000  # gram reads J once: e·T·P
