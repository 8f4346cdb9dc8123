"""A whole GradSurgery step on the Triton backend against the same step on the torch backend."""

from __future__ import annotations

import copy

import pytest
import torch

from gradsurg import GradSurgery

pytest.importorskip("triton", reason="triton not installed")


class Model(torch.nn.Module):
    """Shared two-layer trunk (one parameter of 1 element, one not a multiple of any block)."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(7, 33), torch.nn.Tanh(), torch.nn.Linear(33, 5))
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(5, 1) for _ in range(num_tasks))

    def losses(self, x, y):
        h = self.trunk(x) * self.scale
        return [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


@pytest.mark.parametrize("method", ["pcgrad", "mgda", "upgrad"])
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_full_step_matches_torch_backend(device, method, num_tasks):
    torch.manual_seed(num_tasks)
    model = Model(num_tasks).to(device)
    twin = copy.deepcopy(model)
    x = torch.randn(16, 7, device=device)
    y = torch.randn(16, num_tasks, device=device) * torch.tensor([(-1.0) ** t for t in range(num_tasks)], device=device)
    fast = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=method, backend="triton")
    slow = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.1), method=method, backend="torch")
    s_fast = fast.backward(model.losses(x, y))
    s_slow = slow.backward(twin.losses(x, y))
    assert s_fast.backend == "triton" and s_slow.backend == "torch"
    # Gram: float32 products summed per tile, float64 across tiles (see test_triton_kernels.py).
    scale = s_slow.gram.diagonal().max().item()
    torch.testing.assert_close(s_fast.gram, s_slow.gram, rtol=0, atol=1e-5 * scale)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    fast.step()
    slow.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
