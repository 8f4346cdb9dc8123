"""Each stage of a step on its own: plan, capture, host view, non-finite decision, write."""

from __future__ import annotations

import pytest
import torch

import gradsurg
from gradsurg._buffer import GradBuffer, SharedBuffers
from gradsurg._engine.capture import capture_task_gradients
from gradsurg._engine.decide import nonfinite_tasks
from gradsurg._engine.gram import to_host
from gradsurg._engine.loss_space import DoubleBackwardPath, LossPath
from gradsurg._engine.paths import path_for
from gradsurg._engine.per_task import GramPath, MatrixPath
from gradsurg._engine.plan import plan_step, trainable_parameters
from gradsurg._engine.write import write_shared, write_specific
from gradsurg.kernels import get_backend


def test_plan_finds_the_parameters_two_losses_reach(make_model):
    model, x, y = make_model(3)
    params = trainable_parameters([{"params": list(model.parameters())}])
    plan = plan_step({"a": model.losses(x, y)[0], "b": model.losses(x, y)[1]}, None, params, None)
    trunk = {id(p) for p in model.trunk.parameters()}
    assert plan.names == ["a", "b"] and plan.alphas == [1.0, 1.0]
    assert {id(p) for p in plan.shared} == trunk
    # Each loss reaches the trunk and its own head only.
    head0 = {id(p) for p in model.heads[0].parameters()}
    assert {id(params[k]) for k in plan.reached[0]} == trunk | head0


def test_plan_with_declared_shared_gives_every_task_the_shared_set(make_model):
    model, x, y = make_model(2)
    params = list(model.parameters())
    shared = [model.heads[0].weight]  # reached by task 0 only
    plan = plan_step(model.losses(x, y), [2.0, 0.5], params, shared)
    k = [id(p) for p in params].index(id(model.heads[0].weight))
    assert plan.shared_idx == [k]
    assert all(k in r for r in plan.reached)
    assert plan.alphas == [2.0, 0.5]


def test_plan_refuses_a_loss_that_reaches_nothing(make_model):
    model, x, y = make_model(2)
    stray = torch.nn.Parameter(torch.ones(()))
    with pytest.raises(ValueError, match=r"losses\['1'\]: reaches none"):
        plan_step([model.losses(x, y)[0], stray * 2], None, list(model.parameters()), None)


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


def test_capture_accumulate_adds_into_the_rows(make_model):
    model, x, y = make_model(2)
    params = list(model.parameters())
    kernels = [get_backend("torch", torch.device("cpu"))]
    plan = plan_step(model.losses(x, y), None, params, None)
    buffers = SharedBuffers(plan.shared, 2)
    first = capture_task_gradients(plan, buffers, kernels)
    once = buffers.groups[0].matrix.clone()
    plan = plan_step(model.losses(x, y), None, params, None)
    second = capture_task_gradients(plan, buffers, kernels, accumulate=True)
    torch.testing.assert_close(buffers.groups[0].matrix, 2 * once)
    merged = first.merge(second)
    assert merged.micro_batches == 2
    for k, g in first.specific.items():
        torch.testing.assert_close(merged.specific[k], 2 * g)


def test_shared_buffers_group_parameters_by_layout():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    c = torch.nn.Parameter(torch.ones(4))
    buffers = SharedBuffers([a, b, c], 2)
    assert [g.params for g in buffers.groups] == [[a, c], [b]]
    assert buffers.slots == [(0, 0), (1, 0), (0, 1)]
    x, y, z = torch.zeros(3), None, torch.ones(4)
    assert buffers.split([x, y, z]) == [[x, z], [None]]


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


def test_nonfinite_decision_raises_or_names_the_tasks():
    finite = torch.tensor([True, False, True])
    assert nonfinite_tasks(["a", "b", "c"], torch.ones(3, dtype=torch.bool), "raise") == ()
    assert nonfinite_tasks(["a", "b", "c"], finite, "skip") == ("b",)
    with pytest.raises(FloatingPointError, match=r"task\(s\) \['b'\].*nothing was changed"):
        nonfinite_tasks(["a", "b", "c"], finite, "raise")


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


@pytest.mark.parametrize("name", gradsurg.available_methods())
def test_every_registered_method_has_the_path_of_its_kind(name):
    method = gradsurg.methods.method_class(name)
    expected = {
        gradsurg.methods.GramMethod: GramPath,
        gradsurg.methods.MatrixMethod: MatrixPath,
        gradsurg.methods.LossWeighting: LossPath,
        gradsurg.methods.DoubleBackwardMethod: DoubleBackwardPath,
    }
    kind = next(k for k in expected if issubclass(method, k))
    assert type(path_for(gradsurg.build_method(name, num_tasks=2, layer=[torch.nn.Parameter(torch.ones(2))]))) is expected[kind]


def test_a_method_of_no_known_kind_is_refused():
    class Odd(gradsurg.Method):
        name = ""

    with pytest.raises(TypeError, match="method: Odd is of no known kind"):
        path_for(Odd())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_all_finite_sees_every_kind_of_nonfinite_value(dtype, bad):
    from gradsurg._engine.decide import all_finite

    tensors = [torch.randn(4, 3).to(dtype), torch.empty(0, dtype=dtype), torch.randn(7).to(dtype)]
    if bad is not None:
        tensors[2][5] = bad
    assert bool(all_finite(tensors)) is (bad is None)
    assert bool(all_finite([]))
