"""What shared-parameter detection can and cannot see: through torch.compile and
checkpointing, gradsurg gives the eager result or a clear error that says how to fix it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.utils.checkpoint as cp

from gradsurg import GradSurgery


class TwoHeads(torch.nn.Module):
    """A trunk and two heads; ``forward`` returns both task losses."""

    def __init__(self, checkpoint: str | None = None) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(6, 8)
        self.trunk = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
        self.a = torch.nn.Linear(8, 1)
        self.b = torch.nn.Linear(8, 1)
        self.checkpoint = checkpoint

    def forward(self, x, y):
        h = self.embed(x)
        if self.checkpoint is None:
            h = self.trunk(h)
        else:
            h = cp.checkpoint(self.trunk, h, use_reentrant=self.checkpoint == "reentrant")
        return ((self.a(h).squeeze(-1) - y[:, 0]) ** 2).mean(), ((self.b(h).squeeze(-1) + y[:, 1]) ** 2).mean()


def _data():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=gen), torch.randn(16, 2, generator=gen)


def _eager_grads(model, x, y, method="pcgrad"):
    ref = copy.deepcopy(model)
    ref.checkpoint = None
    opt = GradSurgery(torch.optim.SGD(ref.parameters(), lr=0.1), method=method)
    stats = opt.backward(list(ref(x, y)))
    return [p.grad for p in ref.parameters()], stats


def _assert_grads(model, expected):
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_a_compiled_model_returning_both_heads_is_refused_then_exact_with_shared(backend):
    torch._dynamo.reset()
    model = TwoHeads()
    x, y = _data()
    expected, eager_stats = _eager_grads(model, x, y)
    compiled = torch.compile(model, backend=backend)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    with pytest.raises(ValueError, match=r"use different outputs of one CompiledFunctionBackward node.*pass shared="):
        opt.backward(list(compiled(x, y)))
    assert all(p.grad is None for p in model.parameters())
    shared = [*model.embed.parameters(), *model.trunk.parameters()]
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad", shared=shared)
    stats = opt.backward(list(compiled(x, y)))
    _assert_grads(model, expected)
    torch.testing.assert_close(stats.gram, eager_stats.gram, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_a_compiled_trunk_is_seen_through(backend):
    torch._dynamo.reset()
    model = TwoHeads()
    x, y = _data()
    expected, _ = _eager_grads(model, x, y)
    model.trunk = torch.compile(model.trunk, backend=backend)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    opt.backward(list(model(x, y)))
    _assert_grads(model, expected)
    assert {id(p) for p in opt.shared_parameters} == {
        id(p) for p in [*model.embed.parameters(), *model.trunk.parameters()]
    }


def test_reentrant_checkpoint_is_refused_with_the_fix():
    model = TwoHeads(checkpoint="reentrant")
    x, y = _data()
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    with pytest.raises(ValueError, match=r"CheckpointFunctionBackward.*use_reentrant=False"):
        opt.backward(list(model(x, y)))
    shared = [*model.embed.parameters(), *model.trunk.parameters()]
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad", shared=shared)
    with pytest.raises(ValueError, match=r"use_reentrant=False"):
        opt.backward(list(model(x, y)))
    assert all(p.grad is None for p in model.parameters())


def test_non_reentrant_checkpoint_equals_eager():
    model = TwoHeads(checkpoint="non_reentrant")
    x, y = _data()
    expected, _ = _eager_grads(model, x, y)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    opt.backward(list(model(x, y)))
    _assert_grads(model, expected)
