"""The Triton GPU backend: flatten, Gram and combine as Triton kernels.

Same semantics as :mod:`gradsurg.kernels.reference`. Importing this package imports ``triton``,
so nothing in ``gradsurg`` imports it unless the Triton backend is requested.

Under ``TRITON_INTERPRET=1`` (set before ``triton`` is first imported) the kernels run on CPU
tensors in Triton's interpreter, which is how they are tested without a GPU; the launchers then
pick large blocks, because the interpreter's cost is per program.

Kernels are launched with ``enable_fp_fusion=True`` explicitly (multiply-adds may fuse into
FMAs, triton's historical default), so results do not change with ``TRITON_DEFAULT_FP_FUSION``
and triton 3.9 has no reason to warn about the unset default.
"""

from __future__ import annotations

from .combine import combine_into
from .flatten import flatten_into
from .gram import gram, gram_lists

__all__ = ["NAME", "combine_into", "flatten_into", "gram", "gram_lists"]

NAME = "triton"
