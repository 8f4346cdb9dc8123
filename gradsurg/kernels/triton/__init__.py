"""The Triton GPU backend: flatten, Gram and combine as Triton kernels.

Same semantics as :mod:`gradsurg.kernels.reference`. Importing this package imports ``triton``,
so nothing in ``gradsurg`` imports it unless the Triton backend is requested.

Under ``TRITON_INTERPRET=1`` (set before ``triton`` is first imported) the kernels run on CPU
tensors in Triton's interpreter, which is how they are tested without a GPU; the launchers then
pick large blocks, because the interpreter's cost is per program.

Kernels are launched with ``enable_fp_fusion=True`` explicitly (multiply-adds may fuse into
FMAs, triton's historical default), so results do not change with ``TRITON_DEFAULT_FP_FUSION``
and triton 3.9 has no reason to warn about the unset default.

The Gram kernels rescale rows by exact powers of two where float32 products would overflow or
underflow, so they match the float64 reference over the whole float32 range (see ``gram.py``).
Helpers shared by the three kernels (interpreter detection, dtypes, ``MAX_TASKS`` and the torch
fallback beyond it, block sizes) are in ``_common.py``.
"""

from __future__ import annotations

from ._common import MAX_TASKS, interpreted
from .combine import combine_into
from .flatten import flatten_into
from .gram import gram, gram_lists

__all__ = ["MAX_TASKS", "combine_into", "flatten_into", "gram", "gram_lists", "interpreted", "name"]

#: The backend's name (``Backend.name``).
name = "triton"
