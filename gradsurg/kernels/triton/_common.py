"""What the Triton kernels share: interpreter detection, dtypes, the task limit, block sizes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "FLOAT_DTYPES",
    "MAX_TASKS",
    "TL_DTYPE",
    "interp_block",
    "interpreted",
    "require_cpu_under_interpreter",
    "t_pad",
    "to_float32",
    "use_reference",
]

#: Storage dtypes the compute kernels (Gram, combine) take; they compute in float32. Other
#: dtypes (float64) go through the torch reference, whose float64 arithmetic they would lose.
FLOAT_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
#: Dtypes the flatten kernel copies (a copy loses nothing, so float64 too).
TL_DTYPE = {**FLOAT_DTYPES, torch.float64: tl.float64}

#: Largest T the Gram kernels take (their register tile is T_PAD × T_PAD); more tasks fall back
#: to the torch reference (:func:`use_reference`).
MAX_TASKS = 64

#: ``tl.dot`` needs every dimension ≥ 16; rows are padded up to a power of two (:func:`t_pad`).
MIN_PAD = 16


def interpreted(kernel=None) -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when triton was
    imported): ``@triton.jit`` then returns ``InterpretedFunction``s, which take CPU tensors.

    Args:
        kernel: a jit function to probe; by default triton's own ``tl.zeros_like``, decorated
            at the same time as ours.
    """
    if kernel is None:
        from triton.language import standard

        kernel = standard.zeros_like
    return type(kernel).__name__ == "InterpretedFunction"


def t_pad(num_tasks: int) -> int:
    """Rows of a Gram tile: T padded to a power of two, at least :data:`MIN_PAD`."""
    return max(MIN_PAD, triton.next_power_of_2(num_tasks))


def use_reference(num_tasks: int, dtype: torch.dtype) -> bool:
    """Whether a Gram over T tasks of ``dtype`` goes through the torch reference instead."""
    return num_tasks > MAX_TASKS or dtype not in FLOAT_DTYPES


def interp_block(size: int, target_blocks: int, lo: int, hi: int) -> int:
    """Block size under the interpreter, whose cost is ~1 ms per program whatever its size: the
    power of two that cuts ``size`` into about ``target_blocks`` blocks, within ``[lo, hi]``."""
    block = triton.next_power_of_2(triton.cdiv(max(size, 1), target_blocks))
    return min(max(block, lo), hi)


def require_cpu_under_interpreter(device: torch.device, op: str, what: str) -> None:
    """The interpreter reads raw pointers as host memory: refuse GPU tensors there."""
    if device.type != "cpu":
        raise RuntimeError(
            f"{op}: under TRITON_INTERPRET=1 the {what} must be CPU tensors (the kernel reads them "
            "through raw pointers)"
        )


@triton.jit
def to_float32(x):
    """Exact upcast to float32. bfloat16 is the top half of a float32, so it is widened by a
    shift: as cheap as a conversion on a GPU, and exact for bfloat16 subnormals under the
    interpreter too, whose bfloat16 → float32 cast (triton 3.9) turns them into wrong values."""
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return x.to(tl.float32)
