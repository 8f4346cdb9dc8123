"""The gram stage's host view: the losses, the Gram matrix and the finiteness flags together."""

from __future__ import annotations

import torch

from gradsurg._engine.gram import to_host


def test_host_view_marks_a_task_with_a_nonfinite_loss():
    losses = [torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(2.0)]
    parts = [torch.eye(3, dtype=torch.float64), torch.ones(3, 3, dtype=torch.float32)]
    host = to_host(torch.stack(losses), parts, torch.tensor([True, True, False]))
    assert host.finite.tolist() == [True, False, False]
    assert host.gram.dtype == torch.float64 and host.losses.dtype == torch.float64
    torch.testing.assert_close(host.gram, torch.eye(3, dtype=torch.float64) + 1)
    # A GradScaler's 1/scale unscales the losses (once) and the Gram (squared).
    scaled = to_host(torch.tensor([4.0, 8.0]), [torch.full((2, 2), 16.0)], None, inv_scale=0.25)
    assert scaled.losses.tolist() == [1.0, 2.0] and scaled.gram.tolist() == [[1.0, 1.0], [1.0, 1.0]]
