"""The CUDA C++ kernels (csrc/cuda/*.cu) compile for sm_80 and sm_90, without register spills.

There is no GPU here or in CI: the kernels are proven by compiling them with nvcc where it
exists (the .cu files include no torch headers, so this takes seconds). Each file is compiled
once per architecture; the compile result is cached for the spill check.

The flags are the strict union of a plain build and torch's CUDAExtension build: torch's
-D__CUDA_NO_HALF*/BFLOAT16_CONVERSIONS__ (no implicit half/bfloat16 conversions or operators),
but without its permissive --expt-relaxed-constexpr.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
KERNELS = ["flatten.cu", "gram.cu", "combine.cu"]
ARCHS = ["80", "90"]
NVCC = shutil.which("nvcc")
NO_NVCC = (
    "nvcc not found (CUDA C++ kernels are compile-checked only where nvcc exists; no GPU in CI)"
)
STRICT_FLAGS = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
]

needs_nvcc = pytest.mark.skipif(NVCC is None, reason=NO_NVCC)

_results: dict[tuple[str, str], subprocess.CompletedProcess] = {}


def _compile(source: str, arch: str, out_dir: Path) -> subprocess.CompletedProcess:
    key = (source, arch)
    if key not in _results:
        cmd = [
            NVCC, "-c", "-std=c++17", "-O3", f"-gencode=arch=compute_{arch},code=sm_{arch}",
            "-Xptxas", "-v", "-Werror", "all-warnings", *STRICT_FLAGS,
            str(CUDA_DIR / source), "-o", str(out_dir / f"{Path(source).stem}_sm{arch}.o"),
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        proc.seconds = time.perf_counter() - start  # type: ignore[attr-defined]
        _results[key] = proc
    return _results[key]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nvcc")


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", KERNELS)
def test_kernel_compiles(source, arch, out_dir):
    proc = _compile(source, arch, out_dir)
    print(f"{source} sm_{arch}: {proc.seconds:.1f} s")  # type: ignore[attr-defined]
    assert proc.returncode == 0, f"nvcc failed on {source} for sm_{arch}:\n{proc.stderr}"
    assert (out_dir / f"{Path(source).stem}_sm{arch}.o").stat().st_size > 0


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", KERNELS)
def test_kernels_do_not_spill(source, arch, out_dir):
    proc = _compile(source, arch, out_dir)
    if proc.returncode != 0:
        pytest.skip(f"{source} does not compile for sm_{arch} (see test_kernel_compiles)")
    # ptxas -v, per kernel: "N bytes stack frame, S bytes spill stores, L bytes spill loads".
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", proc.stderr)
    assert spills, f"no ptxas -v report for {source}:\n{proc.stderr}"
    spilling = [m for m in spills if m != ("0", "0")]
    assert not spilling, f"register spills in {source} for sm_{arch}:\n{proc.stderr}"


def _nvcc_include_dirs() -> list[str]:
    """The CUDA toolkit's include directories, as nvcc itself reports them."""
    cmd = [NVCC, "-v", "--dryrun", "-E", "-x", "cu", "/dev/null", "-o", "/dev/null"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("#$ INCLUDES=")), "")
    return re.findall(r'"-I([^"]+)"', line)


@needs_nvcc
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_binding_parses_against_torch_headers():
    """binding.cpp cannot be linked here (CPU torch has no libc10_cuda), but it must type-check.

    ~25 s: <torch/extension.h> is heavy. The CPU wheel lacks the generated
    c10/cuda/impl/cuda_cmake_macros.h (Windows export macros only), hence
    C10_CUDA_NO_CMAKE_CONFIGURE_FILE when it is missing; a CUDA wheel has it.
    """
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    torch_inc = include_paths()
    cuda_inc = _nvcc_include_dirs()
    if not cuda_inc or not (Path(cuda_inc[0]) / "cuda_runtime_api.h").exists():
        pytest.skip("CUDA runtime headers not found")
    cmd = ["g++", "-fsyntax-only", "-std=c++17", "-Wall", "-Wextra"]
    cmd += ["-DTORCH_EXTENSION_NAME=_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    if not (Path(torch_inc[0]) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        cmd.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    for inc in [*torch_inc, *cuda_inc, sysconfig.get_paths()["include"]]:
        cmd += ["-isystem", inc]
    cmd.append(str(CUDA_DIR / "binding.cpp"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"binding.cpp does not compile:\n{proc.stderr}"
    assert "warning" not in proc.stderr, proc.stderr


def test_build_keeps_float32_subnormals():
    # gram.cu rescales rows of tiny values (down to fp32 subnormals) by powers of two: a
    # flush-to-zero build (--use_fast_math implies -ftz=true) would zero them first.
    flags = (ROOT / "setup.py").read_text()
    assert "use_fast_math" not in flags and "ftz=true" not in flags.replace(" ", "")


def test_cuda_backend_unavailable_here_raises_with_build_hint():
    import torch

    from gradsurg.kernels import cuda

    assert cuda.name == "cuda"
    if cuda._EXT.load() is not None:
        pytest.skip("the CUDA extension gradsurg._cuda is built here")
    assert cuda.available() is False
    assert cuda.load_error()
    hint = r"'cuda' is unavailable.*pip install --no-build-isolation -e \."
    with pytest.raises(RuntimeError, match=hint):
        cuda.gram(torch.ones(2, 3))
    with pytest.raises(RuntimeError, match=r"gradsurg\._cuda"):
        cuda.combine_into(torch.zeros(3), torch.ones(2, 3), torch.ones(2))
    with pytest.raises(RuntimeError, match="CUDA toolkit"):
        cuda.flatten_into([torch.zeros(3)], [None])
    with pytest.raises(RuntimeError, match="unavailable"):
        cuda.gram_lists([[torch.ones(3)]])


def test_importing_gradsurg_does_not_load_the_extension():
    import subprocess as sp
    import sys

    code = "import sys, gradsurg, gradsurg.kernels.cuda; print('gradsurg._cuda' in sys.modules)"
    cmd = [sys.executable, "-c", code]
    out = sp.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
