"""The capture stage: each task's gradient into its row of J, nothing visible changed."""

from __future__ import annotations

import torch

from gradsurg._buffer import SharedBuffers
from gradsurg._engine.capture import capture_task_gradients
from gradsurg._engine.plan import plan_step
from gradsurg.kernels import get_backend


def test_capture_writes_each_task_gradient_into_its_row_and_touches_no_grad(make_model):
    model, x, y = make_model(3)
    params = list(model.parameters())
    losses = model.losses(x, y)
    plan = plan_step(losses, [1.0, 2.0, 3.0], params, None, retain_graph=True)
    buffers = SharedBuffers(plan.shared, 3)
    captured = capture_task_gradients(plan, buffers, [get_backend("torch", torch.device("cpu"))])
    buffer = buffers.groups[0]
    assert all(p.grad is None for p in params)
    for t, loss in enumerate(losses):
        expected = torch.autograd.grad(loss * (t + 1), plan.shared, retain_graph=True)
        torch.testing.assert_close(buffer.matrix[t], torch.cat([g.reshape(-1) for g in expected]))
    head = [id(p) for p in params].index(id(model.heads[1].weight))
    torch.testing.assert_close(captured.specific[head], torch.autograd.grad(2 * losses[1], model.heads[1].weight)[0])
    assert captured.finite_specific.tolist() == [True, True, True]
    assert captured.micro_batches == 1
    torch.testing.assert_close(captured.losses, torch.stack(losses).double().detach())
