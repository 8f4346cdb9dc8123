"""The write stage: the combination into views of the buffer, task-specific gradients."""

from __future__ import annotations

import torch

from gradsurg._buffer import GradBuffer
from gradsurg._engine.write import write_shared, write_specific
from gradsurg.kernels import get_backend


def test_write_shared_overwrites_then_accumulates_into_views_of_the_buffer():
    params = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))]
    buffer = GradBuffer(params, 2)
    buffer.matrix.copy_(torch.arange(20.0).reshape(2, 10))
    w = torch.tensor([1.0, -1.0], dtype=torch.float64)
    combine = get_backend("torch", torch.device("cpu")).combine_into
    write_shared(buffer, lambda beta: combine(buffer.flat, buffer.matrix, w, beta=beta))
    expected = buffer.matrix[0] - buffer.matrix[1]
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in params]), expected)
    assert params[0].grad.data_ptr() == buffer.flat.data_ptr()
    write_shared(buffer, lambda beta: combine(buffer.flat, buffer.matrix, w, beta=beta))
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in params]), 2 * expected)


def test_write_specific_adds_scaled_and_gives_stride_zero_gradients_their_own_layout():
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.ones(3)
    write_specific([p, q], {0: torch.full((3,), 2.0), 1: torch.ones(()).expand(2, 2)}, 0.5)
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    assert torch.equal(q.grad, torch.full((2, 2), 0.5)) and q.grad.stride() == q.stride()
