"""examples/run_comparison.py on the tiny preset: every row runs and the results file is written."""

from __future__ import annotations

import importlib.util

import pytest

for module in ("transformers", "peft", "datasets", "rouge_score"):
    pytest.importorskip(module, reason="transformers/peft/datasets/rouge-score not installed")

from _helpers import DATA_DIR, EXAMPLES  # noqa: E402

if not DATA_DIR.is_dir():  # pragma: no cover - CI has ../shared beside the clone
    pytest.skip(f"the shared data folder {DATA_DIR} is missing", allow_module_level=True)


def load_runner():
    spec = importlib.util.spec_from_file_location("run_comparison", EXAMPLES / "run_comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_rows_and_results_file(tmp_path):
    runner = load_runner()
    results_md = tmp_path / "results.md"
    argv = ["--preset", "tiny", "--steps", "2", "--max-train", "8", "--max-eval", "4",
            "--out", str(tmp_path / "runs"), "--results", str(results_md), "--only", "1,3"]
    results = runner.main(argv)
    assert [r["label"] for r in results] == ["single-task summarization", "multi-task pcgrad"]
    text = results_md.read_text()
    assert "| single-task summarization | — |" in text  # no classification metric for that row
    assert "| multi-task pcgrad |" in text
    assert "--method pcgrad" in text and "--single-task aeslc" in text
    for r in results:
        assert r["wall"] > 0 and r["metrics"]["seconds_per_step"] > 0
