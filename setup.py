"""Build script for the optional compiled kernels; everything else is in pyproject.toml.

torch is imported lazily and is not a build requirement (a bare "torch" there resolves to a
multi-GB CUDA build): install torch first, then ``pip install --no-build-isolation -e .``.

- ``gradsurg._C`` (csrc/cpu): C++17 + OpenMP CPU kernels, built whenever torch is importable.
  Portable flags only (no -march=native): the hot loops carry AVX-512/AVX2 clones chosen at run
  time. ``GRADSURG_NATIVE=1`` adds -march=native for a local build.
- ``gradsurg._cuda`` (csrc/cuda): CUDA kernels + torch binding, built only when torch has CUDA
  and a CUDA toolkit (CUDA_HOME) is found.
- ``GRADSURG_NO_EXT=1`` builds neither; gradsurg then runs on its pure-torch backend.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup


def _extensions() -> tuple[list, dict]:
    if os.environ.get("GRADSURG_NO_EXT") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("gradsurg: torch is not installed, building without compiled kernels", file=sys.stderr)
        return [], {}
    # ISO C++ modes turn off FMA contraction; the kernels want fused multiply-adds.
    cflags = ["-O3", "-ffp-contract=fast", "-fopenmp"]
    if os.environ.get("GRADSURG_NATIVE") == "1":
        cflags.append("-march=native")
    extensions = [
        CppExtension(
            "gradsurg._C",
            sources=sorted(glob.glob("csrc/cpu/*.cpp")),
            extra_compile_args=cflags,
            extra_link_args=["-fopenmp"],
        )
    ]
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    if torch.version.cuda and CUDA_HOME and cuda_sources:
        extensions.append(
            CUDAExtension(
                "gradsurg._cuda",
                sources=cuda_sources,
                extra_compile_args={
                    "cxx": ["-O3", "-std=c++17"],
                    "nvcc": ["-O3", "-std=c++17", "-lineinfo",
                             "-gencode=arch=compute_80,code=sm_80",
                             "-gencode=arch=compute_90,code=sm_90"],
                },
            )
        )
    return extensions, {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
