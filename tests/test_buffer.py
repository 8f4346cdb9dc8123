"""The J buffers (gradsurg._buffer): one per (device, dtype) group of shared parameters; the
combined-gradient buffer lives as long as the shared ``.grad`` views: freed by
``zero_grad(set_to_none=True)`` like plain gradients, reused while it is every parameter's
current ``.grad``, and never written over once the user set a gradient aside."""

from __future__ import annotations

import gc

import torch

from gradsurg import GradSurgery
from gradsurg._buffer import SharedBuffers


def _step(opt, model, x, y):
    opt.backward(model.losses(x, y))
    opt.step()


def test_set_to_none_frees_the_combined_buffer(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    _step(opt, model, x, y)
    (group,) = opt._engine.buffers.current.groups
    assert group._held is None and group._flat_ref() is not None  # alive through .grad only
    opt.zero_grad(set_to_none=True)
    gc.collect()
    assert group._flat_ref() is None  # nothing but J stays allocated between steps


def test_zeroed_grads_reuse_the_buffer_in_place(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    _step(opt, model, x, y)
    trunk = model.trunk[0].weight
    first = trunk.grad.data_ptr()
    opt.zero_grad(set_to_none=False)
    _step(opt, model, x, y)
    assert trunk.grad.data_ptr() == first


def test_a_gradient_set_aside_is_not_written_over(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.0), method="pcgrad")
    opt.backward(model.losses(x, y))
    kept = [p.grad for p in model.parameters()]
    saved = [g.clone() for g in kept]
    opt.zero_grad(set_to_none=True)
    opt.backward(model.losses(x * 2, y))  # a different step, while the old .grad is still held
    for g, s in zip(kept, saved):
        assert torch.equal(g, s)


def test_a_second_backward_adds_into_the_existing_grad(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="upgrad")
    opt.backward(model.losses(x, y))
    once = [p.grad.clone() for p in model.parameters()]
    opt.backward(model.losses(x, y))  # Tensor.backward semantics: the second call adds
    for p, g in zip(model.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-6, atol=1e-7)


def test_shared_buffers_group_parameters_by_layout():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    c = torch.nn.Parameter(torch.ones(4))
    buffers = SharedBuffers([a, b, c], 2)
    assert [g.params for g in buffers.groups] == [[a, c], [b]]
    assert buffers.slots == [(0, 0), (1, 0), (0, 1)]
    x, y, z = torch.zeros(3), None, torch.ones(4)
    assert buffers.split([x, y, z]) == [[x, z], [None]]
