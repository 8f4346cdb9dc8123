"""The training script's library-feature flags on the tiny preset: --pooling, --features
(representation-level surgery), --refresh-every, --amp, --eval-split heldout-train."""

from __future__ import annotations

import csv

import pytest

for _mod in ("transformers", "peft", "datasets", "rouge_score"):
    pytest.importorskip(_mod, reason="transformers/peft/datasets/rouge-score not installed")

import _helpers
import torch

from examples.mtl import build, cli, data, model, tasks

if not (_helpers.DATA_DIR / "glue" / "sst2").is_dir() or not (_helpers.DATA_DIR / "summarization" / "aeslc").is_dir():
    pytest.skip(f"shared data not found at {_helpers.DATA_DIR}", allow_module_level=True)

BASE = ["--preset", "tiny", "--tokenizer", "byte", "--glue", "sst2", "--summarization", "aeslc", "--max-train", "16",
        "--max-eval", "4", "--max-source-len", "24", "--max-target-len", "4", "--batch-size", "3", "--quiet",
        "--threads", "1", "--data-dir", str(_helpers.DATA_DIR)]  # fmt: skip


def _setup(extra: list[str]):
    args = cli.parse_args([*BASE, *extra])
    tokenizer = model.load_tokenizer(args.preset, args.model, args.tokenizer)
    loaded = tasks.load_tasks(args, tokenizer)
    return args, tokenizer, loaded, build.build_model(args, tokenizer)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_joint_pass_gives_each_tasks_own_loss(pooling):
    """One decoder pass over all tasks' rows (--features) gives the losses of separate passes."""
    _, tokenizer, loaded, m = _setup(["--pooling", pooling])
    batch = tasks.training_batch(loaded, {"sst2": 3, "aeslc": 3}, 0, seed=0)
    pad = tokenizer.pad_token_id
    joint, h = tasks.joint_losses(m, loaded, batch, pad)
    assert h.requires_grad and h.shape[0] == 6
    for t in ("sst2", "aeslc"):
        separate = tasks.task_loss(m, t, loaded[t]["kind"], batch[t], pad)
        torch.testing.assert_close(joint[t], separate, rtol=1e-5, atol=1e-5)


def test_last_token_pooling_ignores_padding():
    _, tokenizer, loaded, m = _setup(["--pooling", "last"])
    rows = loaded["sst2"]["train"][:2]
    alone = m.classification_logits("sst2", data.collate_classification(rows[:1], tokenizer.pad_token_id))
    padded = data.collate_classification([rows[0], {"input_ids": rows[0]["input_ids"] * 2, "label": 0}], tokenizer.pad_token_id)
    torch.testing.assert_close(m.classification_logits("sst2", padded)[:1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "mgda", "--features"],
        ["--method", "pcgrad", "--refresh-every", "2"],
        ["--method", "pcgrad", "--amp", "bf16"],
        ["--method", "pcgrad", "--amp", "fp16", "--grad-accum", "2"],  # GradSurgery(scaler=) + sync=False
    ],
)
def test_library_feature_flags_train(extra, tmp_path):
    from examples import train_glue_summarization as script

    metrics = script.main([*BASE, *extra, "--steps", "3", "--eval-every", "0", "--output-dir", str(tmp_path)])
    assert metrics["final"]["tasks"]["sst2"]["loss"] > 0
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["weight_sst2"] != "" for r in rows)
    if "--features" in extra:
        # Disjoint rows of h: the task gradients of the representation are orthogonal.
        assert all(abs(float(r["cos_sst2__aeslc"])) < 1e-6 for r in rows)


def test_heldout_rows_are_training_rows_left_out():
    args = cli.parse_args([*BASE, "--eval-split", "heldout-train"])
    train, held = data.load_glue("sst2", args.data_dir, 16, 4, 0, "heldout-train")
    plain_train, _ = data.load_glue("sst2", args.data_dir, 16, 4, 0)
    assert train["idx"] == plain_train["idx"]  # the training rows do not change
    assert len(held) == 4 and not set(held["idx"]) & set(train["idx"])


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--features", "--method", "uw"], "--features"),
        (["--features", "--grad-accum", "2"], "--features"),
        (["--features", "--full-finetune"], "--features"),
        (["--refresh-every", "2", "--method", "uw"], "--refresh-every"),
        (["--pooling", "max"], "--pooling"),
    ],
)
def test_bad_combinations_name_the_flag(extra, flag, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args([*BASE, *extra])
    assert flag in capsys.readouterr().err
