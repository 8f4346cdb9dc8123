"""Every option × method kind × backward argument either works as documented or raises an error
naming the argument, with nothing changed (gradsurg._options, the one place that decides).

A cell that works is compared with the plain eager computation written here by hand, per
vector: per-task gradients by ``torch.autograd.grad``, the Gram matrix in float64, the weights
of a fresh copy of the method, ``Σ_t w_t g_t``. A cell that is refused must name the argument
the table below says, and leave ``.grad`` and the parameters as they were.
"""

from __future__ import annotations

import copy
import itertools
import re
import tempfile
from pathlib import Path

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery
from gradsurg._options import DATA_PARALLEL_MODES, NONFINITE_POLICIES, REDUCTIONS

F64 = torch.float64

#: One method per kind.
KINDS = {"gram": "upgrad", "matrix": "graddrop", "loss": "dwa", "double": "cosreg"}

#: Constructor options, each alone (the default too).
OPTIONS = {
    "default": {},
    "reduction": {"reduction": "mean"},
    "nonfinite": {"nonfinite": "skip"},
    "task_weights": {"task_weights": [2.0, 0.5]},
    "refresh_every": {"refresh_every": 2},
    "groups": {"groups": "parameter"},
    "j_dtype": {"j_dtype": torch.bfloat16},
    "batch_tasks": {"batch_tasks": True},
    "shared": {"shared": "trunk"},
    "backend": {"backend": "torch"},
    "data_parallel": {"data_parallel": "none"},
    "tasks": {"tasks": ["1", "0"]},
    "accumulate": {"accumulate": "mean"},
    "trace": {"trace": "trace.jsonl"},  # put in a scratch folder by _kwargs
}

#: How backward is called: one call, two micro-batches, representation level, both.
CALLS = ("plain", "accumulate", "features", "features_after_accumulate")

#: Options that only some kinds take (the argument an error names).
_GRAM_ONLY = {"refresh_every", "groups", "j_dtype"}
_PER_TASK_ONLY = {"batch_tasks"}
#: Options that change how the parameter-level per-task gradients are taken, stored or reused.
_NOT_WITH_FEATURES = {"refresh_every", "groups", "j_dtype", "batch_tasks"}


def expected_error(kind: str, option: str, call: str) -> tuple[str, str] | None:
    """(stage, argument) of the error a cell must raise; None where it must work."""
    if option in _GRAM_ONLY and kind != "gram":
        return ("construct", option)
    if option in _PER_TASK_ONLY and kind not in ("gram", "matrix"):
        return ("construct", option)
    if call in ("accumulate", "features_after_accumulate") and kind in ("loss", "double"):
        return ("backward", "sync")
    if call.startswith("features") and (
        kind != "gram" or option in _NOT_WITH_FEATURES or call == "features_after_accumulate"
    ):
        return ("backward", "features")
    return None


class Net(torch.nn.Module):
    """A trunk (two layers, the shared parameters) and one head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(4, 1) for _ in range(2))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.trunk(x)
        return h, [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    sign = torch.tensor([1.0, -1.0])
    return [(torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen) * sign) for _ in range(2)]


def _kwargs(net: Net, option: str) -> dict:
    kwargs = dict(OPTIONS[option])
    if kwargs.get("shared") == "trunk":
        kwargs["shared"] = list(net.trunk.parameters())
    if "trace" in kwargs:
        kwargs["trace"] = Path(tempfile.mkdtemp()) / kwargs["trace"]
    return kwargs


def _run(opt: GradSurgery, net: Net, call: str) -> gradsurg.SurgeryStats | None:
    batches = _data()
    if call == "plain":
        h, losses = net(*batches[0])
        return opt.backward(losses)
    if call == "features":
        h, losses = net(*batches[0])
        return opt.backward(losses, features=h)
    _, first = net(*batches[0])
    opt.backward(first, sync=False)
    h, second = net(*batches[1])
    return opt.backward(second, features=h) if call == "features_after_accumulate" else opt.backward(second)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1).to(F64) for t in tensors])


def _hand_reference(net: Net, method: gradsurg.Method, option: str, call: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(trunk gradient, head gradients) of the plain eager computation, per vector."""
    alphas = OPTIONS["task_weights"]["task_weights"] if option == "task_weights" else [1.0, 1.0]
    scale = 0.5 if option == "reduction" else 1.0
    trunk, heads = list(net.trunk.parameters()), list(net.heads.parameters())
    batches = _data()[:1] if call in ("plain", "features") else _data()
    rows = [torch.zeros(sum(p.numel() for p in trunk), dtype=F64) for _ in range(2)]
    head_grad = torch.zeros(sum(p.numel() for p in heads), dtype=F64)
    rep_rows, h = None, None
    for x, y in batches:
        h, losses = net(x, y)
        for t in range(2):
            scaled = alphas[t] * losses[t]
            grads = torch.autograd.grad(scaled, trunk + heads, retain_graph=True, allow_unused=True)
            rows[t] += _flat(grads[: len(trunk)])
            head_grad += _flat(torch.zeros_like(p) if g is None else g for p, g in zip(heads, grads[len(trunk) :]))
        if call == "features":
            rep_rows = [torch.autograd.grad(alphas[t] * losses[t], h, retain_graph=True)[0] for t in range(2)]
    if option == "tasks":
        # Declared in the other order: the step takes the tasks in that order.
        rows = rows[::-1]
    if option == "accumulate" and call == "accumulate":
        # Each task appeared in both micro-batches: its sums are halved.
        rows = [row / 2 for row in rows]
        head_grad = head_grad / 2
    method = copy.deepcopy(method)
    if call == "features":
        assert rep_rows is not None and h is not None
        r = torch.stack([row.reshape(-1).to(F64) for row in rep_rows])
        w = method.weights(r @ r.T) * scale
        combined = (w.to(r) @ r).to(h.dtype).view_as(h)
        trunk_grad = _flat(torch.autograd.grad(h, trunk, grad_outputs=combined))
        return trunk_grad, head_grad * scale
    J = torch.stack(rows)
    if option == "j_dtype":
        J = J.to(torch.bfloat16).to(F64)
    if option == "groups":
        parts, offset = [], 0
        for p in trunk:
            block = J[:, offset : offset + p.numel()]
            parts.append(copy.deepcopy(method).weights(block @ block.T) @ block * scale)
            offset += p.numel()
        return torch.cat(parts), head_grad * scale
    w = method.weights(J @ J.T) * scale
    return w @ J, head_grad * scale


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_option_kind_and_call_works_or_names_the_argument(kind, option, call):
    torch.manual_seed(0)
    net = Net()
    method = gradsurg.build_method(KINDS[kind], num_tasks=2)
    before = [p.detach().clone() for p in net.parameters()]
    expected = expected_error(kind, option, call)
    base = torch.optim.SGD(net.parameters(), lr=0.1)
    if expected is not None and expected[0] == "construct":
        with pytest.raises((TypeError, ValueError), match=rf"^{expected[1]}: "):
            GradSurgery(base, method=method, **_kwargs(net, option))
        assert all(p.grad is None for p in net.parameters())
        return
    fresh = copy.deepcopy(method)
    opt = GradSurgery(base, method=method, **_kwargs(net, option))
    if expected is not None:
        with pytest.raises((TypeError, ValueError), match=rf"^{expected[1]}: "):
            _run(opt, net, call)
        if call == "features_after_accumulate":
            return  # the first micro-batch was accepted; the refused call changed nothing more
        assert all(p.grad is None for p in net.parameters())
        assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
        return
    stats = _run(opt, net, call)
    assert stats is not None and not stats.skipped
    trunk_grad = _flat(p.grad for p in net.trunk.parameters())
    head_grad = _flat(p.grad for p in net.heads.parameters())
    if kind == "gram":
        want_trunk, want_heads = _hand_reference(net, fresh, option, call)
        # bf16 J: each micro-batch's rows are rounded to 8 significant bits before they are summed.
        rtol, atol = (1e-2, 1e-2 * float(want_trunk.abs().max())) if option == "j_dtype" else (1e-5, 1e-7)
        torch.testing.assert_close(trunk_grad, want_trunk, rtol=rtol, atol=atol)
        torch.testing.assert_close(head_grad, want_heads, rtol=1e-5, atol=1e-7)
    elif kind == "loss":
        # One objective Σ_t w_t α_t L_t: its gradient, with the weights the stats report.
        alphas = OPTIONS["task_weights"]["task_weights"] if option == "task_weights" else [1.0, 1.0]
        _, losses = net(*_data()[0])
        w = stats.weights.tolist()
        objective = sum(w[t] * alphas[t] * losses[t] for t in range(2))
        want = _flat(torch.autograd.grad(objective, list(net.parameters())))
        torch.testing.assert_close(_flat(p.grad for p in net.parameters()), want, rtol=1e-5, atol=1e-7)
    else:
        # Matrix and double-backward methods: finite gradients on every parameter; their own
        # oracles are in tests/methods.
        assert torch.isfinite(trunk_grad).all() and torch.isfinite(head_grad).all()


def test_the_table_refuses_what_the_issue_found_silently_ignored():
    # features= with groups=, j_dtype=, batch_tasks= or refresh_every= used to run and ignore
    # the option (and count the step as a non-refresh step).
    for option in ("groups", "j_dtype", "batch_tasks", "refresh_every"):
        assert expected_error("gram", option, "features") == ("backward", "features")


def test_option_literals_are_the_runtime_tuples():
    # The accepted values come from the Literal types, so the two cannot drift.
    assert REDUCTIONS == ("sum", "mean")
    assert NONFINITE_POLICIES == ("raise", "skip")
    assert DATA_PARALLEL_MODES == ("exact", "local", "none")


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"reduction": "avg"}, "reduction"),
        ({"nonfinite": "ignore"}, "nonfinite"),
        ({"backend": "cuda9"}, "backend"),
        ({"data_parallel": "ddp"}, "data_parallel"),
        ({"refresh_every": 0}, "refresh_every"),
        ({"refresh_every": True}, "refresh_every"),
        ({"j_dtype": torch.int8}, "j_dtype"),
        ({"batch_tasks": 0}, "batch_tasks"),
        ({"groups": "layer"}, "groups"),
        ({"groups": [[]]}, "groups"),
        ({"scaler": object()}, "scaler"),
        ({"task_weights": ["a"]}, "task_weights"),
        ({"shared": [torch.ones(2)]}, "shared"),
    ],
)
def test_a_bad_option_names_itself(kwargs, argument):
    net = Net()
    with pytest.raises((TypeError, ValueError), match=rf"^{re.escape(argument)}: "):
        GradSurgery(torch.optim.SGD(net.parameters(), lr=0.1), method="upgrad", **kwargs)
    if argument != "refresh_every":  # the functional step keeps nothing to refresh
        _, losses = net(*_data()[0])
        with pytest.raises((TypeError, ValueError), match=rf"^{re.escape(argument)}: "):
            gradsurg.backward(losses, net.parameters(), method="upgrad", **kwargs)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("sync, retain_graph", [(1, False), (True, "yes")])
def test_backward_arguments_are_checked(sync, retain_graph):
    net = Net()
    opt = GradSurgery(torch.optim.SGD(net.parameters(), lr=0.1), method="upgrad")
    _, losses = net(*_data()[0])
    argument = "sync" if sync is not True else "retain_graph"
    with pytest.raises(TypeError, match=rf"^{argument}: "):
        opt.backward(losses, sync=sync, retain_graph=retain_graph)
    assert all(p.grad is None for p in net.parameters())


def test_the_matrix_covers_every_kind_and_every_constructor_option():
    import inspect

    kinds = {type(gradsurg.build_method(n, num_tasks=2)).__mro__ for n in KINDS.values()}
    bases = (gradsurg.methods.GramMethod, gradsurg.methods.MatrixMethod, gradsurg.methods.LossWeighting)
    assert all(any(b in mro for mro in kinds) for b in (*bases, gradsurg.methods.DoubleBackwardMethod))
    params = set(inspect.signature(GradSurgery).parameters) - {"optimizer", "method"}
    covered = set(itertools.chain.from_iterable(OPTIONS[o] for o in OPTIONS))
    # The scaler has its own suite (tests/engine/test_amp.py), the process group needs ranks
    # (tests/distributed).
    assert params - covered == {"scaler", "process_group"}
