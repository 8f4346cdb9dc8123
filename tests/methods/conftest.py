"""Method tests work on tiny matrices (T ≤ 64, P ≤ a few hundred), where torch's intra-op thread
pool is pure overhead: on a loaded 2-core machine one 3×24 float64 matmul took ~23 ms with two
threads and ~4 µs with one. Run them single-threaded, and restore the setting afterwards."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
