"""The Gram trace, the replay of every Gram method on it, and the report (issue 23)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch

import gradsurg
from gradsurg import GradSurgery
from gradsurg._replay import gram_methods, update_measures
from gradsurg.report import main as report_main
from gradsurg.report import summarize, verdict

F64 = torch.float64


def _data(step, num_tasks=3):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 6, generator=gen)
    y = torch.randn(8, num_tasks, generator=gen) * torch.tensor([(-1.0) ** t for t in range(num_tasks)])
    return x, y


def _losses(model, step):
    return dict(zip("abc", model.losses(*_data(step))))


def _build(name, model):
    return gradsurg.build_method(name, num_tasks=3, layer=model.trunk[2].weight)


def test_the_trace_records_every_applied_step(make_model, tmp_path):
    model, _, _ = make_model(3)
    path = tmp_path / "run" / "trace.jsonl"
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="upgrad", trace=path)
    seen = []
    for step in range(3):
        opt.zero_grad()
        seen.append(opt.backward(_losses(model, step)))
        opt.step()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"format": "gradsurg-trace", "version": 1}
    steps = gradsurg.read_trace(path)
    assert [s.step for s in steps] == [1, 2, 3]
    for s, stats in zip(steps, seen):
        assert s.method == "upgrad" and s.tasks == ("a", "b", "c")
        assert torch.equal(s.gram, stats.gram) and torch.equal(s.weights, stats.weights)
        assert torch.equal(s.losses, stats.losses)  # float64 round-trips exactly


def test_a_killed_run_leaves_every_finished_step_readable(tmp_path):
    """A child process records two steps and is killed while writing the third (simulated by a
    cut last line); the reader returns the two."""
    path = tmp_path / "trace.jsonl"
    code = f"""
import torch, gradsurg, os
torch.manual_seed(0)
p = torch.nn.Parameter(torch.randn(4))
opt = gradsurg.GradSurgery(torch.optim.SGD([p], lr=0.1), method="mgda", shared=[p], trace={str(path)!r})
for i in range(2):
    opt.zero_grad()
    opt.backward([(p * p).sum(), (p - i).pow(2).sum()])
    opt.step()
with open({str(path)!r}, "a") as f:
    f.write('{{"step": 3, "method": "mgda", "tas')
    f.flush()
os.kill(os.getpid(), 9)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode != 0  # killed
    steps = gradsurg.read_trace(path)
    assert [s.step for s in steps] == [1, 2]
    damaged = tmp_path / "damaged.jsonl"
    lines = path.read_text().splitlines()
    damaged.write_text("\n".join([lines[0], "{broken", lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"trace: line 2 .* is damaged"):
        gradsurg.read_trace(damaged)


@pytest.mark.parametrize("name", gram_methods())
def test_the_first_replayed_step_is_the_method_on_the_same_gradients(name, make_model, tmp_path):
    model, _, _ = make_model(3)
    twin = copy.deepcopy(model)
    path = tmp_path / "trace.jsonl"
    GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="mean", trace=path).backward(_losses(model, 0))
    result = gradsurg.replay(path, [name])
    direct = GradSurgery(torch.optim.SGD(twin.parameters(), lr=0.05), method=_build(name, twin)).backward(_losses(twin, 0))
    got = result.methods[name].weights[0]
    torch.testing.assert_close(got, direct.weights, rtol=1e-12, atol=1e-15)


def test_replayed_measures_equal_the_explicit_vectors():
    """From G alone, against the same quantities on explicit gradient vectors."""
    gen = torch.Generator().manual_seed(0)
    J = torch.randn(3, 7, generator=gen, dtype=F64) * torch.tensor([[1.0], [5.0], [0.2]], dtype=F64)
    G = J @ J.T
    w = torch.tensor([0.2, 1.3, -0.4], dtype=F64)
    applied = torch.tensor([1.0, 1.0, 1.0], dtype=F64)
    cos, shares, conflicts, squared = update_measures(G, w)
    d = w @ J
    for t in range(3):
        assert math.isclose(float(cos[t]), float(J[t] @ d / (J[t].norm() * d.norm())), rel_tol=1e-12)
    norms = J.norm(dim=1)
    torch.testing.assert_close(shares, (w.abs() * norms) / (w.abs() * norms).sum())
    assert conflicts == int((J @ d < 0).sum())
    assert math.isclose(squared, float(d @ d), rel_tol=1e-12)
    step = gradsurg.TraceStep(1, "sum", ("a", "b", "c"), torch.zeros(3, dtype=F64), G, applied)

    class Fixed(gradsurg.methods.GramMethod):
        name = ""

        def _weights(self, gram, losses=None):
            return w

    result = gradsurg.replay([step], [Fixed()])
    rel = float((w @ J - applied @ J).norm() / (applied @ J).norm())
    assert math.isclose(result.methods[""].deviation[0], rel, rel_tol=1e-12)


def test_stateful_methods_are_stepped_in_order(make_model, tmp_path):
    """Replaying GradVac over three recorded steps equals GradVac stepped on those Grams."""
    model, _, _ = make_model(3)
    path = tmp_path / "trace.jsonl"
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="mean", trace=path)
    for step in range(3):
        opt.zero_grad()
        opt.backward(_losses(model, step))
        opt.step()
    steps = gradsurg.read_trace(path)
    method = gradsurg.build_method("gradvac")
    expected = [method.weights(s.gram) for s in steps]
    got = gradsurg.replay(path, ["gradvac"]).methods["gradvac"].weights
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _hand_trace(tmp_path, grams, weights):
    path = tmp_path / "hand.jsonl"
    lines = [json.dumps({"format": "gradsurg-trace", "version": 1})]
    for i, (g, w) in enumerate(zip(grams, weights), start=1):
        lines.append(
            json.dumps(
                {"step": i, "method": "sum", "tasks": ["big", "small"], "losses": [1.0, 1.0], "gram": g, "weights": w,
                 "micro_batches": 1, "task_micro_batches": [1, 1], "group_grams": None, "group_weights": None}
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_report_on_a_hand_made_trace_with_known_answers(tmp_path, capsys):
    # Norms 40 and 1, cosine -0.1 on one step of two, +0.1 on the other: known cosines, conflict
    # rate 50 %, norm ratio 40, and MGDA (min-norm) gives the small task most of the weight but
    # the big one none of the update's length... its share of the small task: check exactly.
    g1 = [[1600.0, -4.0], [-4.0, 1.0]]
    g2 = [[1600.0, 4.0], [4.0, 1.0]]
    path = _hand_trace(tmp_path, [g1, g2], [[1.0, 1.0], [1.0, 1.0]])
    summary = report_main([str(path), "--methods", "sum,mean,mgda", "--out", str(tmp_path / "out"), "--quiet"])
    pair = summary.pairs[0]
    assert pair.pair == ("big", "small")
    assert math.isclose(pair.low, -0.1) and math.isclose(pair.high, 0.1) and pair.conflict_rate == 0.5
    assert math.isclose(summary.norm_ratio, 40.0)
    assert summary.weakest == "small"
    by_name = {m.method: m for m in summary.methods}
    assert by_name["sum"].median_deviation == 0.0
    # mean: d/2, half the applied length: deviation exactly 0.5.
    assert math.isclose(by_name["mean"].median_deviation, 0.5, rel_tol=1e-12)
    assert by_name["mean"].median_direction < 1e-7  # the same direction
    # Shares of the sum: 40/41 and 1/41.
    assert math.isclose(by_name["sum"].shares["big"], 40 / 41, rel_tol=1e-12)
    lines = verdict(summary)
    assert lines[0].startswith("tasks conflict on 50 % of steps")
    assert "norms differ 40×" in lines[-1] and "small has the smallest gradients" in lines[-1]
    out = capsys.readouterr().out
    assert "| big / small |" in out and "| mgda |" in out
    for png in ("cosines.png", "shares.png", "deviation.png"):
        assert (tmp_path / "out" / png).stat().st_size > 0
    assert (tmp_path / "out" / "report.md").exists()


def test_the_verdict_says_the_sum_is_fine_when_surgery_changes_nothing(tmp_path):
    # Orthogonal gradients of equal norms: every method reproduces the sum's direction.
    path = _hand_trace(tmp_path, [[[1.0, 0.0], [0.0, 1.0]]] * 3, [[1.0, 1.0]] * 3)
    summary = summarize(gradsurg.replay(path, ["sum", "pcgrad", "upgrad"]))
    assert "the sum is fine" in " ".join(verdict(summary))


def test_bad_inputs_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"^methods: 'dwa' is not a Gram method"):
        gradsurg.replay([], ["dwa"])
    not_a_trace = tmp_path / "x.jsonl"
    not_a_trace.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match=r"^trace: .* is not a gradsurg trace"):
        gradsurg.read_trace(not_a_trace)
    with pytest.raises(ValueError, match=r"^trace: .* is a folder"):
        GradSurgery(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1), trace=tmp_path)
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "missing.jsonl")])


def test_functional_backward_and_resume_continue_the_step_numbers(make_model, tmp_path):
    model, _, _ = make_model(3)
    path = tmp_path / "trace.jsonl"
    for step in range(2):
        model.zero_grad()
        gradsurg.backward(_losses(model, step), model.parameters(), method="upgrad", trace=path)
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="upgrad", trace=tmp_path / "b.jsonl")
    opt.backward(_losses(model, 0))
    opt.step()
    resumed = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="upgrad", trace=tmp_path / "b.jsonl")
    resumed.load_state_dict(opt.state_dict())
    resumed.zero_grad()
    resumed.backward(_losses(model, 1))
    assert [s.step for s in gradsurg.read_trace(path)] == [1, 2]
    assert [s.step for s in gradsurg.read_trace(tmp_path / "b.jsonl")] == [1, 2]


def test_grouped_steps_record_each_groups_gram(make_model, tmp_path):
    model, _, _ = make_model(3)
    path = tmp_path / "trace.jsonl"
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=0.05), method="upgrad", groups="parameter", trace=path)
    stats = opt.backward(_losses(model, 0))
    (step,) = gradsurg.read_trace(path)
    assert step.group_grams is not None and step.group_grams.shape == (4, 3, 3)
    # The same sums in another order of the float32 products (the backends' Gram kernels).
    torch.testing.assert_close(step.group_grams.sum(0), step.gram, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(step.group_weights, stats.group_weights)
