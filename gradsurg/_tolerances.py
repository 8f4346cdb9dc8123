"""How close each kernel backend must come to the float64 oracle, per input dtype.

One set of numbers for the kernel tests (tests/kernels/test_conformance.py, tests/test_kernels_*.py,
tests/triton/) and the GPU acceptance run (``python -m benchmarks.gpu_check``), so that a backend
passes on the GPU by the rule it passes by on the CPU. The oracle is
:mod:`gradsurg.kernels.reference` evaluated in float64 on the already rounded inputs.

* :data:`GRAM_RTOL` — Gram entry (i, j) within ``GRAM_RTOL[dtype] · √(G_ii·G_jj)``. For
  float32/float16/bfloat16 inputs the backends form float32 products (exact for float16/bfloat16
  inputs, one rounding for float32) summed in float32 over one column block (≤ 8192 columns) and
  in float64 across blocks. √(G_ii·G_jj) is the scale every entry of a Gram matrix lives on (an
  off-diagonal entry can cancel to ~0, a relative error on it means nothing); 1e-5 is ≫ the
  √n·2⁻²⁴ ≈ 5e-6 typical of an 8192-term float32 sum and ≪ anything wrong (a lost block, an
  overflow, a flushed row: O(1) or inf). Zero rows must give exact zeros. float64 inputs stay
  float64: :data:`FLOAT64_RTOL`.
* :data:`COMBINE_C` — ``|got − exact| ≤ c · (Σ_t |w_t|·|J_tk| + |β|·|out_k|)`` with c = 8·2⁻²⁴
  (float32: float32 arithmetic over T ≤ 16 terms), 2⁻⁹ (float16) and 2⁻⁶ (bfloat16): the weights
  may be rounded to J's dtype (the reference does) or to float32 (the fast backends), and the
  result is rounded once to out's dtype (triton's interpreter truncates bfloat16, 2⁻⁷). float64:
  :data:`FLOAT64_RTOL`. Sums over more than 16 rows add their own float32 term (the GPU check
  adds (T + 2)·2⁻²⁴).
* :data:`FLOAT32_GRAM_RTOL` — the Gram tolerance of float32 accumulation whatever the input
  dtype (1e-5, for the reasons above): the Triton kernels accumulate every input in float32.
* :data:`FLOAT64_RTOL` — float64 arithmetic (float64 inputs, or inputs upcast to float64 before
  the matmul, as the reference backend does): only float64 rounding remains.

flatten is a copy and is compared bit for bit: it has no tolerance.
"""

from __future__ import annotations

import torch

__all__ = ["COMBINE_C", "FLOAT32_GRAM_RTOL", "FLOAT64_RTOL", "GRAM_RTOL"]

FLOAT32_GRAM_RTOL = 1e-5
FLOAT64_RTOL = 1e-12

GRAM_RTOL: dict[torch.dtype, float] = {
    torch.float32: FLOAT32_GRAM_RTOL,
    torch.float16: FLOAT32_GRAM_RTOL,
    torch.bfloat16: FLOAT32_GRAM_RTOL,
    torch.float64: FLOAT64_RTOL,
}

COMBINE_C: dict[torch.dtype, float] = {
    torch.float32: 8 * 2.0**-24,
    torch.float16: 2.0**-9,
    torch.bfloat16: 2.0**-6,
    torch.float64: FLOAT64_RTOL,
}
