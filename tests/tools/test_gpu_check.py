"""benchmarks/gpu_check/ without a GPU: arguments, the no-GPU exit codes, the oracle comparisons,
the sweep and the table on CPU tensors (torch and cpp standing in for cuda and triton), the whole
flow of parts and the summary, and the helpers around pytest, pip and NVML.

What needs a GPU (CUDA events, the build of gradsurg._cuda, the kernel tests with
TRITON_INTERPRET=0, NVML's memory clock) is exercised only by running the script on one.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks.gpu_check import build, cli, facts, inputs, kernel_tests, oracle, output, plan, proc, sweep, table
from gradsurg.kernels import cpp, reference

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[2]


def _stand_ins() -> dict:
    """The CPU backends that play cuda and triton here."""
    backends = {"torch": reference}
    if cpp.available():
        backends["cpp"] = cpp
    return backends


def _gpu() -> facts.Gpu:
    return facts.Gpu(index=0, name="CPU stand-in", capability=(9, 0), memory_bytes=1 << 30,
                         l2_bytes=1 << 16, peak_Bps=None)


# ---------------------------------------------------------------------------------- arguments


def test_parse_args_defaults_and_flags(tmp_path):
    args = cli.parse_args([])
    assert (args.quick, args.skip_build, args.skip_tests, args.out, args.allow_no_gpu) == (False,) * 3 + (None, False)
    args = cli.parse_args(["--quick", "--skip-build", "--skip-tests", "--out", str(tmp_path / "r"),
                                 "--allow-no-gpu"])
    assert args.quick and args.skip_build and args.skip_tests and args.allow_no_gpu
    assert args.out == tmp_path / "r"
    with pytest.raises(SystemExit):
        cli.parse_args(["--no-such-flag"])


def test_plan_follows_quick():
    full = plan.Plan.from_args(cli.parse_args([]))
    assert full.sweep_tasks == (1, 2, 3, 8, 16, 64, 65) and full.sweep_sizes == (1, 1000, 1_000_000)
    assert full.table_tasks == (2, 4, 8, 16) and full.table_sizes == (10**6, 10**7, 10**8)
    assert full.sweep_backends == ("cuda", "triton")
    quick = plan.Plan.from_args(cli.parse_args(["--quick"]))
    assert len(quick.sweep_tasks) < len(full.sweep_tasks) and max(quick.table_sizes) < max(full.table_sizes)


# ---------------------------------------------------------------------------------- no GPU


def test_no_gpu_reason(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "has no CUDA support" in facts.no_gpu_reason()
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "sees no CUDA device" in facts.no_gpu_reason()


@pytest.mark.parametrize(("argv", "code"), [([], 2), (["--allow-no-gpu"], 0), (["--quick", "--allow-no-gpu"], 0)])
def test_no_gpu_exit_codes(monkeypatch, capsys, argv, code):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(facts, "git_revision", lambda: "abc1234")
    assert cli.main(argv) == code
    out = capsys.readouterr().out
    assert "== gradsurg GPU check ==" in out and "torch:" in out and "triton:" in out and "nvcc:" in out
    assert "no CUDA device: nothing to check" in out
    assert f"exit {code}" in out


# --------------------------------------------------------------------------- oracle comparisons


def test_gram_error():
    rows = torch.randn(3, 50, dtype=torch.float64)
    rows[1] = 0.0
    exact = rows @ rows.T
    assert oracle.gram_error(exact.clone(), exact) == 0.0
    off = exact.clone()
    off[0, 2] += 1e-3 * math.sqrt(exact[0, 0] * exact[2, 2])
    assert oracle.gram_error(off, exact) == pytest.approx(1e-3, rel=1e-6)
    not_zero = exact.clone()
    not_zero[1, 1] = 1e-300  # a zero row must give exact zeros
    assert oracle.gram_error(not_zero, exact) == math.inf
    assert oracle.gram_error(exact.float(), exact) == math.inf  # the Gram is float64
    assert oracle.gram_error(exact[:2, :2], exact) == math.inf
    inf = exact.clone()
    inf[0, 0] = math.inf
    assert oracle.gram_error(inf, exact) == math.inf
    nan_exact = exact.clone()
    nan_exact[2, :] = math.nan
    assert oracle.gram_error(exact, nan_exact) == math.inf
    assert oracle.gram_error(nan_exact.clone(), nan_exact) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_combine_error(dtype):
    matrix = torch.randn(4, 300).to(dtype)
    weights = torch.randn(4, dtype=torch.float64)
    start = torch.randn(300).to(dtype)
    out = start.clone()
    reference.combine_into(out, matrix, weights, beta=1.0)
    assert oracle.combine_error(out, start, matrix, weights, 1.0) <= 1.0
    exact = (weights @ matrix.double()).to(dtype)
    assert oracle.combine_error(exact, None, matrix, weights, 0.0) <= 1.0
    assert oracle.combine_error(exact, start, matrix, weights, 1.0) > 1.0  # β ignored
    wrong = exact.clone()
    wrong[7] = wrong[7].double() * 1.1 + 0.5
    assert oracle.combine_error(wrong, None, matrix, weights, 0.0) > 1.0
    wrong[7] = math.nan
    assert oracle.combine_error(wrong, None, matrix, weights, 0.0) == math.inf
    assert oracle.combine_tolerance(torch.float32, 65) > oracle.combine_tolerance(torch.float32, 2)


def test_layouts_params_and_grads():
    for layout, contiguous in [("contiguous", True), ("strided", False), ("column-major", False)]:
        matrix = inputs.make_matrix(3, 11, torch.bfloat16, CPU, layout)
        assert matrix.shape == (3, 11) and matrix.dtype == torch.bfloat16
        assert matrix.is_contiguous() == contiguous
    with pytest.raises(ValueError, match="unknown layout"):
        inputs.make_matrix(2, 3, torch.float32, CPU, "diagonal")
    for size in [1, 2, 5, 6, 7, 1000, 4099]:
        specs = inputs.param_specs(size)
        assert sum(math.prod(s) for s, _ in specs) == size
    shapes, grads = inputs.make_grads(2, 1000, torch.float32, CPU)
    kinds = [k for _, k in inputs.param_specs(1000)]
    assert {"transposed", "strided", "expand", "cast", "none"} <= set(kinds)
    assert grads[0][kinds.index("none")] is None
    assert grads[0][kinds.index("cast")].dtype == torch.float64
    assert grads[0][kinds.index("expand")].stride() == (0,)
    assert not grads[0][kinds.index("transposed")].is_contiguous()
    assert [tuple(g.shape) for g in grads[1] if g is not None] == [s for s, k in zip(shapes, kinds) if k != "none"]


def test_extreme_scales_cover_each_dtype_range():
    f32 = [s for scales in inputs.EXTREME_SCALES[torch.float32].values() for s in scales]
    assert {1e-30, 1e30, 2.0**-149, 2.0**127} <= set(f32)
    bf16 = [s for scales in inputs.EXTREME_SCALES[torch.bfloat16].values() for s in scales]
    assert 2.0**-133 in bf16 and 2.0**-149 not in bf16  # bf16's smallest subnormal
    for dtype, cases in inputs.EXTREME_SCALES.items():
        for scales in cases.values():
            rows = inputs.scaled_rows(scales, 64, dtype, CPU)
            assert torch.isfinite(rows).all() and (rows != 0).any(dim=1).sum() >= len(scales) - 1


# ------------------------------------------------------------------------------------- sweep


def test_sweep_passes_for_correct_backends(capsys):
    result = sweep.sweep(_stand_ins(), CPU, tasks=(2, 65), sizes=(1, 300))
    assert result.broken is None
    assert result.checks and not result.failures(), [c.line() for c in result.failures()]
    counts = result.by_backend()
    assert set(counts) == set(_stand_ins())
    ops = {c.op for c in result.checks}
    assert ops == {"gram", "combine β=0", "combine β=1", "flatten", "gram_lists"}
    assert any("scales all 1e30" in c.case for c in result.checks)
    out = capsys.readouterr().out
    assert "[sweep] fp32 T=65:" in out and "[sweep] fp16 extreme scales:" in out


def _broken_backend():
    """Plausible mistakes: a float32 Gram (overflows/underflows at extreme scales), a combine that
    ignores β, a flatten that skips None gradients (leaves the 7s), a gram_lists that drops a parameter."""

    def gram(matrix):
        m = matrix.float()
        return (m @ m.T).double()

    def combine_into(out, matrix, weights, *, beta=0.0):
        out.copy_((weights.double() @ matrix.double()).to(out.dtype))

    def flatten_into(dst, grads):
        for d, g in zip(dst, grads):
            if g is not None:
                d.copy_(g)

    def gram_lists(grads):
        return reference.gram_lists([row[:-1] or row for row in grads])

    return SimpleNamespace(name="broken", gram=gram, combine_into=combine_into, flatten_into=flatten_into,
                           gram_lists=gram_lists)


def test_sweep_catches_broken_backend(capsys):
    result = sweep.sweep({"broken": _broken_backend()}, CPU, tasks=(3,), sizes=(300,),
                             dtypes=(torch.float32,), layouts=("strided",))
    failed = {(c.op, "extreme" if "scale" in c.case else "ordinary") for c in result.failures()}
    assert failed == {("gram", "extreme"), ("combine β=1", "ordinary"), ("flatten", "ordinary"),
                      ("gram_lists", "ordinary")}
    assert ("gram", "ordinary") not in failed  # a float32 Gram of ordinary rows is within 1e-5
    assert "FAIL broken flatten" in capsys.readouterr().out


def test_sweep_reports_exceptions():
    def raises(*args, **kwargs):
        raise RuntimeError("kernel launch failed\nsecond line")

    backend = SimpleNamespace(name="x", gram=raises, combine_into=raises, flatten_into=raises, gram_lists=raises)
    result = sweep.sweep({"x": backend}, CPU, tasks=(2,), sizes=(5,), dtypes=(torch.float16,),
                             layouts=("contiguous",))
    assert result.checks and all(c.worst == math.inf for c in result.checks)
    assert all(c.detail == "RuntimeError: kernel launch failed" for c in result.checks)


# ------------------------------------------------------------------------------------- table


def test_bytes_moved():
    assert table.bytes_moved("gram", 8, 1000, 4) == 32_000
    assert table.bytes_moved("combine", 8, 1000, 2) == 18_000
    assert table.bytes_moved("flatten", 8, 1000, 4) == 64_000
    assert table.bytes_moved("step", 8, 1000, 4) == 4 * 33 * 1000


def test_bench_and_table_formats(capsys):
    rows, notes = table.bench(_stand_ins(), CPU, tasks=(2,), sizes=(1000,), copy_Bps=1e10, peak_Bps=2e10,
                                  l2_bytes=1 << 12, rounds=2, min_round_s=0.0)
    backends = list(_stand_ins())
    assert len(rows) == (4 + 2) * len(backends) and not notes
    for row in rows:
        assert row["ms"] > 0 and row["GBps"] == pytest.approx(row["bytes"] / row["ms"] / 1e6)
        assert row["of_copy"] == pytest.approx(row["GBps"] * 1e9 / 1e10)
        assert row["of_peak"] == pytest.approx(row["of_copy"] / 2)
    assert {(r["op"], r["dtype"]) for r in rows} == {(op, "fp32") for op in plan.OPS} | {
        ("gram", "bf16"), ("combine", "bf16")}
    assert any(r["note"] == "fits in L2" for r in rows) and any(r["note"] == "" for r in rows)
    assert "[table] fp32 T=2 P=1e3 torch" in capsys.readouterr().out

    lines = table.format_markdown(rows).splitlines()
    assert lines[0] == "| op | dtype | T | P | backend | ms | GB/s | of copy | of peak | note |"
    assert len(lines) == 2 + len(rows)
    assert lines[2].startswith("| gram | fp32 | 2 | 1e3 | ") and lines[-1].startswith("| step | fp32 |")
    parsed = list(csv.DictReader(io.StringIO(table.format_csv(rows, {"device": "cpu"}))))
    assert len(parsed) == len(rows) and parsed[0]["device"] == "cpu" and parsed[0]["op"] == "gram"
    assert float(parsed[0]["ms"]) > 0 and parsed[0]["of_peak"]

    failed = table._row("gram", torch.float32, 2, 10, "cuda", None, 80, 1e10, None, "error")
    assert "| — | — | — | — | error |" in table.format_markdown([failed])


def test_bench_skips_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(table, "free_bytes", lambda device: 1 << 20)
    rows, notes = table.bench(_stand_ins(), CPU, tasks=(2,), sizes=(10**8,), copy_Bps=1e10, peak_Bps=None)
    assert rows == [] and len(notes) == 2 and all(n.startswith("skipped") and "GiB free" in n for n in notes)


def test_time_call_and_copy_bandwidth_on_cpu():
    calls = []
    seconds = table.time_call(lambda: calls.append(1), CPU, rounds=3, min_round_s=0.0)
    assert seconds >= 0 and len(calls) == 2 + 3
    assert table.copy_bandwidth(CPU, 1 << 20, rounds=2) > 0


def test_fmt():
    assert [output.fmt_size(p) for p in (1, 1000, 10**6, 10**8, 65537)] == ["1", "1e3", "1e6", "1e8", "65537"]
    assert output.fmt_gbps(3350.4) == "3350" and output.fmt_gbps(1.234) == "1.23"
    assert output.dtype_name(torch.bfloat16) == "bf16"


# ------------------------------------------------------------------------ the whole flow on CPU


def _args(tmp_path, **kw) -> argparse.Namespace:
    argv = ["--skip-build", "--skip-tests", "--out", str(tmp_path / "report")]
    return cli.parse_args(argv + [f"--{k.replace('_', '-')}" for k, v in kw.items() if v])


def _tiny_plan(**kw) -> plan.Plan:
    names = tuple(_stand_ins())
    return plan.Plan(sweep_tasks=(2,), sweep_sizes=(7,), table_tasks=(2,), table_sizes=(1000,), rounds=2,
                          min_round_s=0.0, sweep_backends=names, table_backends=("torch",), copy_bytes=1 << 20, **kw)


def test_run_parts_passes_and_writes_reports(tmp_path, capsys):
    code = cli.run_parts(_args(tmp_path), CPU, _gpu(), [("gpu", "stand-in")], _tiny_plan(), 0.0)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "build  SKIP  --skip-build" in out and "tests  SKIP  --skip-tests" in out
    assert "sweep  PASS" in out and "table  PASS  6 timings of torch" in out
    assert "batched PASS  batched vs one pass per task: worst relative difference" in out
    assert "result: PASS (exit 0)" in out
    md = (tmp_path / "report.md").read_text()
    assert "- **gpu**: stand-in" in md and "## Kernel table" in md and "| gram | fp32 | 2 | 1e3 | torch |" in md
    assert len((tmp_path / "report.csv").read_text().splitlines()) == 1 + 6
    assert (tmp_path / "report.logs").is_dir()


def test_run_parts_fails_on_a_wrong_kernel(tmp_path, capsys, monkeypatch):
    real = cli._backends
    calls = []

    def with_broken(device, names):
        calls.append(names)
        if len(calls) == 1:  # the sweep's backends
            return {"broken": _broken_backend()}, {"cuda": "not built here"}
        return real(device, names)  # the table's

    monkeypatch.setattr(cli, "_backends", with_broken)
    code = cli.run_parts(_args(tmp_path), CPU, _gpu(), [], _tiny_plan(), 0.0)
    out = capsys.readouterr().out
    assert code == 1
    assert "sweep  FAIL" in out and "cuda NOT CHECKED (not built here)" in out
    assert "sweep FAIL broken combine β=1" in out and "result: FAIL (exit 1)" in out
    assert "## Sweep failures" in (tmp_path / "report.md").read_text()


def test_run_parts_fails_when_no_gpu_backend_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_backends", lambda device, names: ({}, dict.fromkeys(names, "unavailable")))
    code = cli.run_parts(_args(tmp_path), CPU, _gpu(), [], _tiny_plan(), 0.0)
    out = capsys.readouterr().out
    assert code == 1 and "no GPU backend runs here, nothing was checked" in out
    assert "table  FAIL" in out  # no timings at all


# ----------------------------------------------------------------------- build, tests, NVML


def test_build_is_skipped_without_cuda_torch_or_toolkit(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    part = build.build_extension(tmp_path)
    assert part.status == "SKIP" and "has no CUDA" in part.detail
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(build, "nvcc_path", lambda: None)
    part = build.build_extension(tmp_path)
    assert part.status == "SKIP" and "no CUDA toolkit" in part.detail and "triton still is" in part.detail


def test_build_failure_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(build, "nvcc_path", lambda: "/usr/bin/true")
    def run_logged(cmd, log, **kw):
        log.write_text("error: nvcc died\n")
        return 1, 3.0

    monkeypatch.setattr(build, "run_logged", run_logged)
    part = build.build_extension(tmp_path)
    assert part.status == "FAIL" and "exited 1" in part.detail
    assert "error: nvcc died" in capsys.readouterr().out


def test_kernel_test_groups_and_pytest_output():
    groups = dict(kernel_tests.kernel_test_groups(ROOT))
    assert "tests/test_kernels_reference.py" in groups["kernel files"]
    assert "tests/test_cuda_compile.py" not in groups["kernel files"]  # nvcc only: the build does that
    assert groups["tests/triton"] == ["tests/triton"] and groups["tests/kernels"] == ["tests/kernels"]
    output = ("....sF\n=========== short test summary info ===========\n"
              "SKIPPED [12] tests/kernels/test_conformance.py:66: backend 'cpp' cannot run\n"
              "FAILED tests/triton/test_triton_step.py::test_step[cuda] - AssertionError\n"
              "1 failed, 120 passed, 12 skipped, 2 warnings in 9.10s\n")
    assert kernel_tests.pytest_counts(output) == {"failed": 1, "passed": 120, "skipped": 12, "warnings": 2}
    assert kernel_tests.pytest_counts("no summary") == {}
    notes = kernel_tests.pytest_notes(output)
    assert notes[0].startswith("FAILED tests/triton") and notes[1].startswith("SKIPPED [12]")  # failures first
    assert len(kernel_tests.pytest_notes("FAILED x\n" * 30, limit=5)) == 6
    assert len(kernel_tests.pytest_notes("SKIPPED " + "y" * 500, width=80)[0]) == 80


def test_run_logged(tmp_path):
    log = tmp_path / "log.txt"
    rc, seconds = proc.run_logged([sys.executable, "-c", "print('hello')"], log, label="t", timeout=30)
    assert rc == 0 and "hello" in log.read_text() and seconds >= 0
    rc, _ = proc.run_logged([sys.executable, "-c", "import time; time.sleep(30)"], log, label="t", timeout=0.2)
    assert rc is None


def test_nvml_and_peak_bandwidth():
    assert isinstance(facts.nvml_facts(0, None), dict)  # never raises, with or without a driver
    # H100 SXM: 2619 MHz HBM3 on a 5120-bit bus → 3.35 TB/s.
    peak = facts.peak_bandwidth({"mem_clock_mhz": 2619, "bus_width_bits": 5120})
    assert peak == pytest.approx(3.352e12, rel=1e-3)
    assert facts.peak_bandwidth({"mem_clock_mhz": 2619}) is None


def test_nvml_index_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert facts._nvml_index(1) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert facts._nvml_index(0) == 3 and facts._nvml_index(1) == 1 and facts._nvml_index(2) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert facts._nvml_index(0) == "GPU-abc"
