"""End-to-end runs of examples/train_glue_summarization.py with the tiny preset on real data.

Data: a few dozen rows of ../shared/data (SST-2 + AESLC). The resume test compares a 4+2-step
run with an uninterrupted 6-step run; the batch order is a function of the step and the
checkpoint restores parameters, optimizer + gradsurg state and RNG, so the parameters agree
bit for bit on one machine (checked with pcgrad, famo and graddrop). The test allows an
absolute difference of 1e-6 so that it does not depend on BLAS/threading details.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

REASON = "transformers/peft/datasets/rouge-score not installed"
for _mod in ("transformers", "peft", "datasets", "rouge_score"):
    pytest.importorskip(_mod, reason=REASON)

import _helpers
import torch

if (
    not (_helpers.DATA_DIR / "glue" / "sst2").is_dir()
    or not (_helpers.DATA_DIR / "summarization" / "aeslc").is_dir()
):
    pytest.skip(f"shared data not found at {_helpers.DATA_DIR}", allow_module_level=True)

PNG = b"\x89PNG\r\n\x1a\n"
BASE = [
    "--preset",
    "tiny",
    "--glue",
    "sst2",
    "--summarization",
    "aeslc",
    "--max-train",
    "24",
    "--max-eval",
    "8",
    "--max-source-len",
    "40",
    "--max-target-len",
    "6",
    "--batch-size",
    "4",
    "--quiet",
    "--threads",
    "1",
    "--data-dir",
    str(_helpers.DATA_DIR),
]


@pytest.fixture(scope="module")
def script():
    return _helpers.load_script()


def _finite_numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for k, v in obj.items() if k != "example" for x in _finite_numbers(v)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [float(obj)]
    return []


def _check_run(out: Path, tasks: list[str], expect_cosine: bool) -> dict:
    for name in ("metrics.json", "log.csv", "loss_curves.png", "checkpoint/checkpoint.pt"):
        assert (out / name).is_file(), name
    assert (out / "loss_curves.png").read_bytes()[:8] == PNG
    if expect_cosine:
        assert (out / "cosine.png").read_bytes()[:8] == PNG
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"config", "tasks", "evals", "final", "seconds_per_step", "trainable_params"} <= set(
        metrics
    )
    assert metrics["tasks"] == tasks
    final = metrics["final"]["tasks"]
    assert set(final) == set(tasks)
    values = _finite_numbers(final)
    assert values and all(math.isfinite(v) for v in values)
    if "sst2" in final:
        assert {"loss", "accuracy"} <= set(final["sst2"]) and 0 <= final["sst2"]["accuracy"] <= 1
    if "aeslc" in final:
        assert {"loss", "rouge1", "rouge2", "rougeL"} <= set(final["aeslc"])
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[0] == "step"
    assert [f"loss_{t}" for t in tasks] == header[1 : 1 + len(tasks)]
    assert all(math.isfinite(float(r[f"loss_{t}"])) for r in rows for t in tasks)
    return metrics


def test_multitask_pcgrad_end_to_end(script, tmp_path, capsys):
    out = tmp_path / "pcgrad"
    metrics = script.main(
        [*BASE, "--method", "pcgrad", "--steps", "4", "--eval-every", "2", "--task-weights", "cls=1,sum=0.5",
         "--task-lr", "cls=1e-3", "--output-dir", str(out)]
    )
    _check_run(out, ["sst2", "aeslc"], expect_cosine=True)
    assert [e["step"] for e in metrics["evals"]] == [2, 4]
    with open(out / "log.csv", newline="") as f:
        header = next(csv.reader(f))
    assert {"weight_sst2", "weight_aeslc", "num_conflicts", "cos_sst2__aeslc"} <= set(header)
    assert "| multi-task pcgrad | sst2 |" in capsys.readouterr().out


def test_single_task_baseline(script, tmp_path):
    out = tmp_path / "single"
    script.main(
        [*BASE, "--single-task", "sst2", "--tokenizer", "byte", "--steps", "3", "--eval-every", "0", "--output-dir", str(out)]
    )
    metrics = _check_run(out, ["sst2"], expect_cosine=False)
    assert not (out / "cosine.png").exists()
    assert metrics["config"]["single_task"] == "sst2"


def test_loss_space_method_skips_cosine(script, tmp_path):
    out = tmp_path / "uw"
    script.main(
        [*BASE, "--method", "uw", "--tokenizer", "byte", "--steps", "2", "--output-dir", str(out)]
    )
    _check_run(out, ["sst2", "aeslc"], expect_cosine=False)
    assert not (out / "cosine.png").exists()


def test_resume_matches_uninterrupted(script, tmp_path):
    common = [*BASE, "--method", "pcgrad", "--tokenizer", "byte", "--eval-every", "0", "--grad-accum", "2"]
    script.main([*common, "--steps", "4", "--output-dir", str(tmp_path / "a")])
    script.main(
        [*common, "--steps", "6", "--resume", str(tmp_path / "a" / "checkpoint"), "--output-dir", str(tmp_path / "b")]
    )
    script.main([*common, "--steps", "6", "--output-dir", str(tmp_path / "c")])
    resumed = torch.load(tmp_path / "b" / "checkpoint" / "checkpoint.pt", weights_only=False)
    straight = torch.load(tmp_path / "c" / "checkpoint" / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == straight["step"] == 6
    assert resumed["trainable"].keys() == straight["trainable"].keys()
    for name, value in straight["trainable"].items():
        torch.testing.assert_close(resumed["trainable"][name], value, rtol=0, atol=1e-6, msg=name)
    with open(tmp_path / "b" / "log.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_bad_flags_name_the_flag(script, capsys):
    cases = [
        (["--steps", "0"], "--steps"),
        (["--method", "nope"], "--method"),
        (["--glue", "nope"], "--glue"),
        (["--task-weights", "cls=abc"], "--task-weights"),
        (["--task-weights", "foo=1"], "--task-weights"),
        (["--single-task", "cola"], "--single-task"),
        (["--summarization", "mystery"], "--summarization"),
        (["--resume", "/nonexistent/dir"], "--resume"),
        (["--task-lr", "sum=1e-3"], "--task-lr"),
    ]
    for extra, flag in cases:
        with pytest.raises(SystemExit) as exc:
            script.parse_args(
                ["--preset", "tiny", "--glue", "sst2", "--summarization", "aeslc", *extra]
            )
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err, (extra, flag)


def test_cosreg_proportional_full_finetune(script, tmp_path):
    """The paper's cosreg (double backward: eager attention) with proportional batches and all
    weights trained."""
    out = tmp_path / "cosreg"
    metrics = script.main(
        [*BASE, "--method", "cosreg", "--tokenizer", "byte", "--schedule", "proportional", "--full-finetune",
         "--steps", "2", "--output-dir", str(out)]
    )
    _check_run(out, ["sst2", "aeslc"], expect_cosine=True)
    assert metrics["trainable_params"] == metrics["total_params"]


def test_proportional_batch_sizes(script):
    args = script.parse_args(
        [
            "--preset",
            "tiny",
            "--glue",
            "sst2,rte",
            "--summarization",
            "aeslc",
            "--schedule",
            "proportional",
            "--batch-size",
            "4",
        ]
    )
    sizes = script.task_batch_sizes(args, {"sst2": 600, "rte": 300, "aeslc": 300})
    assert sizes == {"sst2": 6, "rte": 3, "aeslc": 3}
    args = script.parse_args(
        [
            "--preset",
            "tiny",
            "--glue",
            "sst2,rte",
            "--summarization",
            "aeslc",
            "--task-weights",
            "cls=2,aeslc=0.5",
            "--task-lr",
            "rte=1e-3",
        ]
    )
    assert args.task_weights == {"sst2": 2.0, "rte": 2.0, "aeslc": 0.5}
    assert args.task_lr == {"rte": 1e-3}


def test_cli_bad_input_exit_code(tmp_path):
    """Run as a program: bad input exits with code 2 and a message naming the flag."""
    import subprocess

    script = "examples.train_glue_summarization"
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", script, "--preset", "tiny", "--batch-size", "-3"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=_helpers.REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "--batch-size" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            script,
            "--preset",
            "tiny",
            "--tokenizer",
            "byte",
            "--steps",
            "1",
            "--lora-targets",
            "nope_proj",
            "--quiet",
            "--max-train",
            "4",
            "--max-eval",
            "2",
            "--data-dir",
            str(_helpers.DATA_DIR),
            "--output-dir",
            str(tmp_path / "x"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=_helpers.REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "--lora-targets" in proc.stderr
