"""Part 1, ``build``: compile and load ``gradsurg._cuda`` with the CUDA toolkit."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import torch

from .facts import nvcc_path, nvcc_version
from .output import say
from .proc import run_logged, tail
from .verdict import Part

__all__ = ["build_extension"]


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
