"""Shared fixtures: deterministic seeds and small multi-task models."""

from __future__ import annotations

import os
import sys

# Triton kernels run on CPU tensors under the interpreter, which triton reads when its jit
# decorator runs: the variable must be set before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")
assert "triton" not in sys.modules or os.environ["TRITON_INTERPRET"] == "1", (
    "triton was imported before tests/conftest.py set TRITON_INTERPRET=1"
)

import pytest
import torch
from hypothesis import settings

# CI runs the property tests derandomized, so a landing never depends on the draw; local runs
# keep exploring new examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Tests that exercise the multi-threaded kernels (OpenMP in the C++ backend) keep torch's
# threads; everything else works on tiny tensors, where the intra-op pool is pure overhead
# (a quarter of the suite's time on two cores).
_KEEP_THREADS = ("/kernels/", "/triton/", "test_kernels_", "test_benchmark")


@pytest.fixture(autouse=True)
def _single_thread(request):
    if any(part in str(request.node.path) for part in _KEEP_THREADS):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SharedTrunk(torch.nn.Module):
    """A shared trunk with one linear head per task: the smallest real MTL model."""

    def __init__(self, num_tasks: int, d_in: int = 6, d_hidden: int = 10) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(d_in, d_hidden), torch.nn.Tanh(), torch.nn.Linear(d_hidden, d_hidden)
        )
        self.heads = torch.nn.ModuleList(torch.nn.Linear(d_hidden, 1) for _ in range(num_tasks))

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """One regression loss per task; y has one column per task."""
        h = self.trunk(x)
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


@pytest.fixture
def make_model():
    """Factory of seeded SharedTrunk models with data whose targets conflict."""

    def make(num_tasks: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = SharedTrunk(num_tasks)
        x = torch.randn(8, 6, generator=gen)
        # Opposite-signed targets make the tasks' trunk gradients conflict.
        y = torch.randn(8, num_tasks, generator=gen) * torch.tensor([(-1.0) ** t for t in range(num_tasks)])
        return model, x, y

    return make
