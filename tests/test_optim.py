"""GradSurgery on a real shared-trunk model: the step it takes equals the step computed by hand."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery
from gradsurg.kernels import cpp

# Methods whose step is "weights from G, then w @ J": the hand computation below applies to them.
METHODS = [n for n in gradsurg.available_methods() if issubclass(gradsurg.methods.method_class(n), gradsurg.methods.GramMethod)
           and n in ("sum", "mean", "pcgrad", "gradvac", "cagrad", "mgda", "imtl_g")]


def hand_gradients(model, x, y, method, task_weights=None, reduction="sum"):
    """Per-task gradients by plain autograd, J by torch.cat, weights from an independent copy."""
    losses = model.losses(x, y)
    num_tasks = len(losses)
    alphas = task_weights or [1.0] * num_tasks
    shared = list(model.trunk.parameters())
    rows, head_grads = [], []
    for t, loss in enumerate(losses):
        grads = torch.autograd.grad(alphas[t] * loss, shared + list(model.heads[t].parameters()), retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads[: len(shared)]]))
        head_grads.append(grads[len(shared) :])
    matrix = torch.stack(rows)
    weights = method.weights(matrix.double() @ matrix.double().T)
    scale = 1.0 / num_tasks if reduction == "mean" else 1.0
    combined = (weights * scale).to(matrix.dtype) @ matrix
    shared_grads, offset = [], 0
    for p in shared:
        shared_grads.append(combined[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    heads = [[g * scale for g in hg] for hg in head_grads]
    return shared_grads, heads


@pytest.mark.parametrize("method_name", METHODS)
@pytest.mark.parametrize("num_tasks", [2, 3, 4])
def test_one_step_equals_hand_computed_step(make_model, method_name, num_tasks):
    model, x, y = make_model(num_tasks)
    reference_model = copy.deepcopy(model)
    method = gradsurg.get_method(method_name)
    hand_method = copy.deepcopy(method)
    lr = 0.05
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=lr), method=method)

    opt.zero_grad()
    stats = opt.backward(model.losses(x, y))
    shared_grads, head_grads = hand_gradients(reference_model, x, y, hand_method)

    for p, g in zip(model.trunk.parameters(), shared_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    for t in range(num_tasks):
        for p, g in zip(model.heads[t].parameters(), head_grads[t]):
            torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7)
    assert stats.num_conflicts > 0  # the data was built to conflict
    assert stats.backend == ("cpp" if cpp.available() else "torch") and not stats.skipped

    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p.detach(), b - lr * p.grad)


def test_task_weights_and_mean_reduction(make_model):
    model, x, y = make_model(3)
    reference_model = copy.deepcopy(model)
    alphas = [0.5, 2.0, 1.0]
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="mgda",
                      task_weights=alphas, reduction="mean")
    stats = opt.backward(dict(zip("abc", model.losses(x, y))))
    shared_grads, head_grads = hand_gradients(reference_model, x, y, gradsurg.get_method("mgda"),
                                              task_weights=alphas, reduction="mean")
    for p, g in zip(model.trunk.parameters(), shared_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    for t in range(3):
        for p, g in zip(model.heads[t].parameters(), head_grads[t]):
            torch.testing.assert_close(p.grad, g)
    assert stats.task_names == ("a", "b", "c")
    torch.testing.assert_close(stats.weights.sum(), torch.tensor(1.0 / 3, dtype=torch.float64))


def test_task_weights_by_name_scale_the_gram(make_model):
    model, x, y = make_model(2)
    plain = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="sum")
    g_plain = plain.backward(dict(zip("ab", model.losses(x, y)))).gram
    weighted = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="sum", task_weights={"b": 3.0})
    g_weighted = weighted.backward(dict(zip("ab", model.losses(x, y)))).gram
    scale = torch.tensor([[1.0, 3.0], [3.0, 9.0]], dtype=torch.float64)
    torch.testing.assert_close(g_weighted, g_plain * scale)


@pytest.mark.parametrize("method_name", ["pcgrad", "gradvac", "cagrad"])
def test_state_dict_round_trip_continues_bit_identically(make_model, method_name):
    def train(model, opt, sched, steps, x, y):
        for _ in range(steps):
            opt.zero_grad()
            opt.backward(model.losses(x, y))
            opt.step()
            sched.step()

    def build(model):
        opt = GradSurgery(torch.optim.AdamW(model.parameters(), lr=1e-2), method=gradsurg.get_method(method_name, seed=3)
                          if method_name != "cagrad" else "cagrad")
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    model, x, y = make_model(4)
    opt, sched = build(model)
    train(model, opt, sched, 3, x, y)
    checkpoint = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    train(model, opt, sched, 4, x, y)

    resumed, _, _ = make_model(4, seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    opt2, sched2 = build(resumed)
    opt2.load_state_dict(checkpoint["opt"])
    sched2.load_state_dict(checkpoint["sched"])
    train(resumed, opt2, sched2, 4, x, y)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    if method_name == "gradvac":
        assert torch.equal(opt.method.rho, opt2.method.rho)


def test_pcgrad_order_depends_on_generator_state(make_model):
    # Guard for the round-trip test: without the saved generator the continuation would differ.
    model, x, y = make_model(4)
    a = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=gradsurg.get_method("pcgrad", seed=0))
    b = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method=gradsurg.get_method("pcgrad", seed=1))
    weights_a = [a.backward(model.losses(x, y)).weights for _ in range(3)]
    weights_b = [b.backward(model.losses(x, y)).weights for _ in range(3)]
    assert any(not torch.equal(wa, wb) for wa, wb in zip(weights_a, weights_b))


def test_works_with_lr_scheduler_and_clip_grad_norm(make_model):
    model, x, y = make_model(3)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    for _ in range(3):
        opt.zero_grad()
        opt.backward(model.losses(x, y))
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.01)
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        assert total <= 0.01 * (1 + 1e-5)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 4)
    assert opt.optimizer.param_groups is opt.param_groups


def test_gradients_accumulate_like_backward(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="sum")
    opt.backward(model.losses(x, y))
    once = [p.grad.clone() for p in model.parameters()]
    opt.backward(model.losses(x, y))
    for p, g in zip(model.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g)
    opt.zero_grad(set_to_none=False)
    opt.backward(model.losses(x, y))
    for p, g in zip(model.parameters(), once):
        torch.testing.assert_close(p.grad, g)


def test_sum_method_equals_plain_backward(make_model):
    model, x, y = make_model(3)
    twin = copy.deepcopy(model)
    GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="sum").backward(model.losses(x, y))
    sum(twin.losses(x, y)).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)


def test_explicit_shared_and_untouched_parameters(make_model):
    model, x, y = make_model(2)
    unused = torch.nn.Parameter(torch.ones(3))
    unused.grad = torch.full((3,), 5.0)
    never = torch.nn.Parameter(torch.ones(2))
    opt = GradSurgery(torch.optim.SGD([*model.parameters(), unused, never], lr=0.1), method="mgda",
                      shared=model.trunk[0].parameters())
    opt.backward(model.losses(x, y))
    assert opt.shared_parameters == list(model.trunk[0].parameters())
    assert torch.equal(unused.grad, torch.full((3,), 5.0))
    assert never.grad is None
    # trunk[2] is not declared shared: it gets the ordinary summed gradient.
    twin_model = copy.deepcopy(model)
    for p in twin_model.parameters():
        p.grad = None
    sum(twin_model.losses(x, y)).backward()
    for a, b in zip(model.trunk[2].parameters(), twin_model.trunk[2].parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_single_task_and_zero_gradient_task(make_model):
    model, x, y = make_model(2)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="imtl_g")
    losses = model.losses(x, y)
    stats = opt.backward([losses[0], 0.0 * losses[1]])
    assert torch.isfinite(stats.cosine).all() and stats.cosine[0, 1] == 0 and stats.cosine[1, 1] == 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    single = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.1), method="pcgrad")
    single.zero_grad()
    stats = single.backward([model.losses(x, y)[0]])
    assert stats.gram is None and stats.weights.tolist() == [1.0]  # nothing shared: applied as is
    assert model.trunk[0].weight.grad is not None and model.heads[1].weight.grad is None


def test_expanded_gradient_can_be_clipped_in_place():
    # d(p.sum())/dp is an expanded tensor of ones (stride 0); .grad must still be writable.
    shared = torch.nn.Parameter(torch.randn(4))
    own = torch.nn.Parameter(torch.randn(3))
    opt = GradSurgery(torch.optim.SGD([shared, own], lr=0.1), method="mean")
    opt.backward([shared.pow(2).sum() + own.sum(), (shared - 1).pow(2).sum()])
    torch.nn.utils.clip_grad_norm_([own], max_norm=0.5)
    torch.testing.assert_close(own.grad.norm(), torch.tensor(0.5))
