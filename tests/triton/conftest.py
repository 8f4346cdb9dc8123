"""Triton kernel tests: run on CPU tensors under the Triton interpreter (no GPU needed).

``TRITON_INTERPRET`` must be in the environment before ``triton`` is first imported: the
``@triton.jit`` decorator (ours and triton's own standard library) picks the interpreter at
decoration time. Nothing imports triton before this file when pytest runs ``tests/`` (the root
conftest imports torch only, and torch does not import triton), so setting it here is enough.

If triton was already imported with the interpreter off (something earlier in the session
imported it, or ``TRITON_INTERPRET=0`` was exported), the kernels are compiled GPU kernels: the
kernel tests then run on CUDA tensors if a GPU is present and are skipped otherwise (through the
``device`` fixture). ``test_triton_aot.py`` compiles in a separate process with the variable
removed, so it runs either way.

Skips are not raised from this file: pytest does not handle a skip raised while importing the
conftest of a command-line argument (``pytest tests/triton``); each test module calls
``pytest.importorskip("triton", reason="triton not installed")`` instead.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

_IMPORTED_BEFORE = "triton" in sys.modules


def _interpreter_active() -> bool | None:
    """Whether the jit functions were decorated for the interpreter; None without triton."""
    try:
        import triton.language.standard as standard
    except ImportError:
        return None
    # Probe triton's own standard library and, if already imported, our kernels.
    probes = [standard.zeros_like]
    for name in ("gram", "combine", "flatten"):
        module = sys.modules.get(f"gradsurg.kernels.triton.{name}")
        if module is not None:
            probes.append(getattr(module, f"_{name}_kernel"))
    return all(type(p).__name__ == "InterpretedFunction" for p in probes)


INTERPRETED = _interpreter_active()


@pytest.fixture(scope="session")
def device() -> torch.device:
    """CPU under the interpreter, else the GPU the compiled kernels run on (or skip)."""
    if INTERPRETED is None:
        pytest.skip("triton not installed")
    if INTERPRETED:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip(
        "triton was imported with the interpreter off "
        f"(TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}, imported before this conftest: "
        f"{_IMPORTED_BEFORE}) and there is no GPU to run compiled kernels on; run tests/triton "
        "on its own or export TRITON_INTERPRET=1"
    )
