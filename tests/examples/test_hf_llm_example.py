"""examples/hf_llm.py: the HF Trainer, one task per batch, on the tiny preset and the shipped
data; its first update equals the reference training script's own loop on the same batches."""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers import DATA_DIR

pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("peft", reason="peft is not installed")
pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "glue" / "sst2").exists(), reason="the shared data folder ../shared/data is missing"
)


def _args(tmp_path, *extra):
    from examples import hf_llm

    # max-train = batch-size: each task's first batch is its whole training subset, whatever
    # order a sampler draws it in, so both loops see the same batches.
    flags = [
        "--preset", "tiny", "--steps", "1", "--batch-size", "4", "--max-train", "4", "--max-eval", "4",
        "--eval-batch-size", "4", "--data-dir", str(DATA_DIR), "--output-dir", str(tmp_path / "run"),
        "--quiet", *extra,
    ]  # fmt: skip
    return hf_llm.build_parser().parse_args(flags)


@pytest.mark.parametrize("method", ["upgrad", "sum"])
def test_first_update_equals_the_own_loop_on_the_same_batches(tmp_path, method):
    from examples import hf_llm
    from examples.mtl import cli
    from examples.mtl.build import build_optimizer
    from examples.mtl.tasks import task_batch_sizes
    from examples.mtl.train import train_step

    args = _args(tmp_path, "--method", method)
    trainer, model, tasks, tokenizer = hf_llm.make_trainer(args)
    own = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    stats_hf = trainer.last_surgery_stats
    margs = cli.parse_args(hf_llm.training_flags(args))
    optimizer = build_optimizer(margs, own)
    sizes = task_batch_sizes(margs, {t: len(tasks[t]["train"]) for t in tasks})
    _, stats_own = train_step(margs, own, optimizer, tasks, sizes, 0, tokenizer.pad_token_id)
    assert stats_hf.task_names == stats_own.task_names == ("sst2", "aeslc")
    assert stats_hf.task_micro_batches == stats_own.task_micro_batches == (1, 1)
    torch.testing.assert_close(stats_hf.losses, stats_own.losses, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats_hf.gram, stats_own.gram, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(stats_hf.weights, stats_own.weights, rtol=1e-4, atol=1e-7)
    moved = 0
    for start, a, b in zip(before, model.parameters(), own.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(a, start))
    assert moved > 0


def test_the_example_runs_and_reports_each_task(tmp_path, capsys):
    from examples import hf_llm

    flags = [
        "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--max-train", "8", "--max-eval", "4",
        "--eval-batch-size", "4", "--data-dir", str(DATA_DIR), "--output-dir", str(tmp_path / "run"), "--quiet",
    ]  # fmt: skip
    summary = hf_llm.main(flags)
    assert 0.0 <= summary["eval_sst2_accuracy"] <= 1.0
    assert "eval_aeslc_rouge1" in summary and "eval_aeslc_loss" in summary
    assert summary["micro_batches_per_step"] == 2 and summary["last_step_tasks"] == ["sst2", "aeslc"]
    assert (tmp_path / "run" / "metrics.json").exists()
    assert "task-homogeneous" in capsys.readouterr().out


def test_a_method_that_cannot_accumulate_is_refused(tmp_path):
    from examples import hf_llm

    with pytest.raises(SystemExit, match="--method: dwa weighs all the losses"):
        hf_llm.main(["--preset", "tiny", "--method", "dwa", "--data-dir", str(DATA_DIR), "--quiet"])
