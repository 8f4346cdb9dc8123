"""Every Triton kernel compiles ahead of time to GPU code for sm_80 and sm_90 (no GPU needed).

``triton.compile`` with a ``GPUTarget`` runs the whole NVIDIA pipeline (TTIR → TTGIR → LLVM →
PTX → cubin with triton's bundled ptxas) without a driver. It needs real ``JITFunction``s, but
in this test session ``TRITON_INTERPRET=1`` made ``@triton.jit`` return interpreted functions,
so the compilation runs in one subprocess whose environment has no ``TRITON_INTERPRET``: this
very file, run as a script, compiles every launch configuration the launchers use on a GPU
(float32 and bfloat16 variants) for both targets and prints a JSON report, which the tests
below check entry by entry. The subprocess uses a fresh triton cache, so nothing is reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if __name__ != "__main__":
    pytest.importorskip("triton", reason="triton not installed")

ARCHS = (80, 90)
DTYPES = ("fp32", "bf16")
ROOT = Path(__file__).resolve().parents[2]
# Compile ~50 kernels (~0.3 s each) plus triton's import: well under this.
TIMEOUT_S = 240


def variants():
    """(name, module, kernel name, signature, constexprs, num_warps) of every GPU configuration.

    Mirrors what the launchers pass on a GPU: tile sizes from the modules' GPU constants; unit
    strides of contiguous J/out are constexpr 1 (as triton's runtime specialises them), plus one
    generic-stride variant per strided kernel.
    """
    import importlib

    import triton.language as tl

    gram = importlib.import_module("gradsurg.kernels.triton.gram")
    combine = importlib.import_module("gradsurg.kernels.triton.combine")
    flatten = importlib.import_module("gradsurg.kernels.triton.flatten")
    tl_dtype = {"fp32": tl.float32, "bf16": tl.bfloat16}
    out = []
    for dt in DTYPES:
        for t_pad in (16, 32, 64):
            tile, warps = gram._gpu_tile(t_pad)
            sig = {
                "J": f"*{dt}", "PART": "*fp64", "T": "i32", "P": "i32", "stride_t": "i32",
                "stride_p": "constexpr", "num_tiles": "i32", "T_PAD": "constexpr", "TILE_P": "constexpr",
            }  # fmt: skip
            consts = {"stride_p": 1, "T_PAD": t_pad, "TILE_P": tile}
            out.append((f"gram[{dt},T_PAD={t_pad}]", "gram", "_gram_kernel", sig, consts, warps))
            sig = {
                "ROW_PTRS": "*i64", "WORK": "*i64", "PART": "*fp64", "T": "i32", "num_items": "i32",
                "DTYPE": "constexpr", "T_PAD": "constexpr", "TILE_P": "constexpr",
            }  # fmt: skip
            consts = {"DTYPE": tl_dtype[dt], "T_PAD": t_pad, "TILE_P": tile}
            out.append((f"gram_lists[{dt},T_PAD={t_pad}]", "gram", "_gram_lists_kernel", sig, consts, warps))
        for num_tasks in (1, 2, 64):
            for accumulate in (False, True):
                block, rows, warps = combine._config(num_tasks, 10**7, interpreted=False)
                sig = {
                    "OUT": f"*{dt}", "J": f"*{dt}", "W": "*fp32", "beta": "fp32", "T": "i32", "P": "i32",
                    "stride_t": "i32", "stride_p": "constexpr", "stride_o": "constexpr",
                    "ACCUMULATE": "constexpr", "ROWS": "constexpr", "BLOCK_P": "constexpr",
                }  # fmt: skip
                consts = {"stride_p": 1, "stride_o": 1, "ACCUMULATE": accumulate, "ROWS": rows, "BLOCK_P": block}
                name = f"combine[{dt},ROWS={rows},ACCUMULATE={accumulate}]"
                out.append((name, "combine", "_combine_kernel", sig, consts, warps))
        sig = {"DST": f"*{dt}", "TABLE": "*i64", "WORK": "*i64", "DTYPE": "constexpr", "BLOCK": "constexpr"}
        consts = {"DTYPE": tl_dtype[dt], "BLOCK": flatten._GPU_BLOCK}
        out.append((f"flatten[{dt}]", "flatten", "_flatten_kernel", sig, consts, flatten._GPU_WARPS))
    # Generic strides (a J or out that is a strided view).
    tile, warps = gram._gpu_tile(16)
    sig = {
        "J": "*fp32", "PART": "*fp64", "T": "i32", "P": "i32", "stride_t": "i32", "stride_p": "i32",
        "num_tiles": "i32", "T_PAD": "constexpr", "TILE_P": "constexpr",
    }  # fmt: skip
    out.append(("gram[fp32,T_PAD=16,strided]", "gram", "_gram_kernel", sig, {"T_PAD": 16, "TILE_P": tile}, warps))
    block, rows, warps = combine._config(3, 10**7, interpreted=False)
    sig = {
        "OUT": "*fp32", "J": "*fp32", "W": "*fp32", "beta": "fp32", "T": "i32", "P": "i32",
        "stride_t": "i32", "stride_p": "i32", "stride_o": "i32",
        "ACCUMULATE": "constexpr", "ROWS": "constexpr", "BLOCK_P": "constexpr",
    }  # fmt: skip
    consts = {"ACCUMULATE": True, "ROWS": rows, "BLOCK_P": block}
    out.append(("combine[fp32,strided]", "combine", "_combine_kernel", sig, consts, warps))
    return out


def _ptxas_registers(log: str) -> dict:
    """Registers and spill bytes from the ``ptxas -v`` log of triton's own cubin build."""
    import re

    regs = re.findall(r"Used (\d+) registers", log)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    return {"registers": int(regs[-1]) if regs else None, "spill_bytes": sum(spills) if regs else None}


def _compile_all() -> dict:
    """Subprocess side: compile every variant for every arch; one entry per (variant, arch)."""
    import contextlib
    import importlib
    import io
    import re

    import triton
    from triton.backends.compiler import GPUTarget

    triton.knobs.nvidia.dump_ptxas_log = True
    report = {}
    for name, module, kernel_name, signature, constexprs, num_warps in variants():
        kernel = getattr(importlib.import_module(f"gradsurg.kernels.triton.{module}"), kernel_name)
        for arch in ARCHS:
            key = f"{name}@sm_{arch}"
            try:
                if type(kernel).__name__ != "JITFunction":
                    raise TypeError(f"{kernel_name} is a {type(kernel).__name__}, not a JITFunction")
                src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
                # triton prints its ptxas -v log when asked: capture it (stdout carries the JSON).
                log = io.StringIO()
                with contextlib.redirect_stdout(log):
                    compiled = triton.compile(
                        src,
                        target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": num_warps, "enable_fp_fusion": True},
                    )
                ptx = compiled.asm.get("ptx", "")
                entry = {
                    "ok": True,
                    "cubin_bytes": len(compiled.asm.get("cubin", b"")),
                    "ptx_bytes": len(ptx),
                    "ptx_target": next((ln.split()[1] for ln in ptx.splitlines() if ln.startswith(".target")), None),
                    # float32 → bfloat16 stores: round-to-nearest conversions (scalar or packed).
                    "cvt_rn_bf16": re.search(r"cvt\.rn\.bf16(x2)?\.f32", ptx) is not None,
                    # Flush-to-zero float32 instructions (mul.ftz.f32, max.ftz.f32, ...).
                    "ftz": re.search(r"\.ftz\.", ptx) is not None,
                    "shared_bytes": compiled.metadata.shared,
                    **_ptxas_registers(log.getvalue()),
                }
            except Exception as exc:
                entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            report[key] = entry
    return report


@pytest.fixture(scope="module")
def aot_report(tmp_path_factory) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if proc.returncode != 0:
        pytest.fail(f"AOT compile subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _keys():
    return [f"{name}@sm_{arch}" for name, *_ in variants() for arch in ARCHS]


@pytest.mark.parametrize("key", _keys())
def test_kernel_compiles(aot_report, key):
    entry = aot_report.get(key)
    assert entry is not None, f"{key} missing from the report"
    assert entry["ok"], entry.get("error")
    assert entry["cubin_bytes"] > 0 and entry["ptx_bytes"] > 0
    arch = key.rsplit("sm_", 1)[1]
    assert entry["ptx_target"] is not None and entry["ptx_target"].startswith(f"sm_{arch}")
    # The chosen tile sizes fit in registers (ptxas -v of the cubin triton built): spills would
    # mean a silently slow configuration.
    assert entry["registers"] is not None, "no ptxas -v log captured"
    assert entry["spill_bytes"] == 0, f"{key}: {entry['spill_bytes']} bytes of register spills"


@pytest.mark.parametrize("key", [k for k in _keys() if k.startswith("gram")])
def test_gram_keeps_float32_subnormals(aot_report, key):
    # The Gram kernels rescale rows of tiny values (down to float32 subnormals, ~1e-45) by powers
    # of two: flush-to-zero arithmetic (max.ftz, mul.ftz) would zero them first.
    entry = aot_report[key]
    assert entry["ok"] and entry["ftz"] is False


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_store_rounds_to_nearest(aot_report, arch):
    # The interpreter truncates float32 → bfloat16; compiled code must round to nearest even.
    entry = aot_report[f"combine[bf16,ROWS=4,ACCUMULATE=False]@sm_{arch}"]
    assert entry["ok"] and entry["cvt_rn_bf16"]


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("run without TRITON_INTERPRET: the kernels must be JITFunctions")
    sys.path.insert(0, str(ROOT))
    print(json.dumps(_compile_all()))
