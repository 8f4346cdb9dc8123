"""One unattended check of the GPU kernels on a machine with a CUDA GPU: build, test, sweep, time.

    python -m benchmarks.gpu_check                      # everything (sized for < 8 min on an H100/H200)
    python -m benchmarks.gpu_check --quick              # smaller sweep and table
    python -m benchmarks.gpu_check --quick --skip-build --skip-tests    # about a minute
    python -m benchmarks.gpu_check --out runs/gpu       # also runs/gpu.md and runs/gpu.csv
    make gpu-check ARGS="--quick --out runs/gpu"

The GPU backends (``cuda``: csrc/cuda built as ``gradsurg._cuda``; ``triton``:
gradsurg/kernels/triton) are checked elsewhere without a GPU only by the Triton interpreter and
by nvcc compiling. This script runs them for real, in five parts, and prints what someone can
paste back whole:

1. ``build``: ``pip install --no-build-isolation --no-deps -e .`` with the CUDA toolkit, which
   (setup.py) compiles ``gradsurg._cuda`` when torch has CUDA and a toolkit is found. A missing
   nvcc is reported and the rest goes on without the cuda backend (SKIP, not FAIL).
2. ``tests``: the kernel test files (tests/test_kernels_*.py, tests/kernels/, tests/triton/) in
   pytest subprocesses with ``TRITON_INTERPRET=0`` (the test conftests default it to 1), so the
   Triton kernels compile for the GPU and the conformance suite runs cuda and triton on CUDA
   tensors. (tests/test_cuda_compile.py, nvcc compiling without a GPU, is left out: the build
   compiles the same kernels.)
3. ``sweep``: every GPU backend against the float64 oracle (:mod:`gradsurg.kernels.reference`)
   on the GPU: T ∈ {1,2,3,8,16,64,65}, P ∈ {1, 1000, 1e6}, fp32/bf16/fp16; J contiguous, with
   column stride 2 and column-major; ``gram``, ``combine_into`` (β = 0 and 1), ``flatten_into``
   and ``gram_lists`` of non-contiguous, stride-0, cast and missing (None) gradients; and rows of
   extreme scale (1e-30, 1e30, subnormal 2^-149 to 2^127 in fp32/bf16; 2^-24 to 2^15 in fp16)
   where the Gram must match the float64 reference over the dtype's whole finite range.
   Tolerances (gradsurg._tolerances, as in tests/kernels/test_conformance.py): Gram entry (i, j) within
   1e-5·√(G_ii·G_jj); combine within c·(Σ_t |w_t|·|J_tk| + |β|·|out_k|) with c = 8·2⁻²⁴ (fp32),
   2⁻⁹ (fp16), 2⁻⁶ (bf16) plus (T+2)·2⁻²⁴ for the float32 sum over T rows; flatten bit for bit.
4. ``table``: milliseconds (CUDA events, median of rounds that each last ≥ 20 ms), GB/s and the
   fraction of the device's memory bandwidth, both as measured by a device-to-device copy in the
   same run and as the theoretical peak from NVML (max memory clock × bus width × 2), for gram,
   combine, flatten and a whole step (flatten + gram + PCGrad weights + combine), per backend
   (cuda, triton and the torch reference on the GPU), T ∈ {2,4,8,16}, P ∈ {1e6,1e7,1e8}, fp32,
   plus bf16 for gram and combine. Cases that do not fit in free GPU memory are skipped with a
   note; working sets that fit in L2 are marked (their GB/s can exceed DRAM bandwidth).
5. ``batched``: ``batch_tasks=True`` (the T per-task backward passes as one vmapped call) against
   one pass per task on the shared-input transformer of ``benchmarks.compare_cheap``, T ∈ {2,4,8}:
   the update must agree to 1e-5 relative, and the times (naive, per-task floor, sequential,
   batched) say whether batching pays on this GPU (on two CPU cores it does not).

Bytes moved (e = bytes per element): gram eTP, combine e(T+1)P, flatten 2eTP, step e(4T+1)P.

Exit code: 0 when every part that ran passed (a part skipped for a stated reason does not fail),
1 when a build, test, correctness check or timing failed, 2 when there is no CUDA device (0 with
``--allow-no-gpu``: "no CUDA device: nothing to check").
"""

# One module per part, and what they share (the docstring above is also --help's text):
#   cli.py            arguments, the run of the parts in order, the summary and exit code
#   plan.py           the grids of the sweep and the table (--quick or not)
#   facts.py          machine facts: torch, triton, nvcc, the GPU, NVML's peak bandwidth
#   build.py          1. build gradsurg._cuda
#   kernel_tests.py   2. the kernel test files in pytest subprocesses
#   inputs.py, oracle.py, sweep.py
#                     3. the sweep's inputs, the errors against the float64 oracle, the sweep
#   table.py          4. the kernel table (timings, GB/s, Markdown and CSV)
#   batched.py        5. batch_tasks on the GPU (benchmarks.compare_cheap)
#   report.py         FILE.md and FILE.csv of --out
#   verdict.py, output.py, proc.py
#                     a part's PASS/FAIL/SKIP, printing and formatting, subprocesses
# This file imports none of them: cli.py imports its docstring (--help) without a cycle.
