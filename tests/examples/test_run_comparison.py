"""examples/run_comparison.py on the tiny preset: rows × seeds run, --collect re-tabulates them."""

from __future__ import annotations

import importlib.util

import pytest

for module in ("transformers", "peft", "datasets", "rouge_score"):
    pytest.importorskip(module, reason="transformers/peft/datasets/rouge-score not installed")

from _helpers import DATA_DIR, EXAMPLES

if not DATA_DIR.is_dir():  # pragma: no cover - CI has ../shared beside the clone
    pytest.skip(f"the shared data folder {DATA_DIR} is missing", allow_module_level=True)


def load_runner():
    spec = importlib.util.spec_from_file_location("run_comparison", EXAMPLES / "run_comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUDGET = ["--preset", "tiny", "--steps", "2", "--max-train", "8", "--max-eval", "4"]


def test_rows_seeds_results_file_and_collect(tmp_path):
    runner = load_runner()
    results_md = tmp_path / "results.md"
    common = [*BUDGET, "--out", str(tmp_path / "runs"), "--results", str(results_md)]
    rows = runner.main([*common, "--only", "1,3", "--seeds", "0,1"])
    assert [[r["label"] for r in row] for row in rows] == [
        ["single-task summarization"] * 2, ["multi-task pcgrad"] * 2
    ]
    assert [r["seed"] for r in rows[1]] == [0, 1]
    text = results_md.read_text()
    assert "| single-task summarization | 2 | — |" in text  # no classification metric there
    assert "| multi-task pcgrad | 2 |" in text and " ± " in text
    assert "--method pcgrad" in text and "--single-task aeslc" in text
    assert "--task-lr cls=0.001" in text  # the head learning rate every row shares
    for row in rows:
        for r in row:
            assert r["wall"] > 0 and r["metrics"]["seconds_per_step"] > 0

    # --collect trains nothing: it finds both seeds of row 3, and nothing for row 2.
    collected = runner.main([*common, "--only", "2,3", "--seeds", "0,1,2", "--collect"])
    assert collected[0] == []
    assert [r["seed"] for r in collected[1]] == [0, 1]
    assert [r["metrics"] for r in collected[1]] == [r["metrics"] for r in rows[1]]
    assert "multi-task mean" not in results_md.read_text()

    # A different budget is not mixed into the table.
    with pytest.raises(SystemExit, match="another budget"):
        runner.main([*common, "--steps", "3", "--only", "3", "--collect"])


def test_mean_std_formatting():
    runner = load_runner()
    assert runner.mean_std([]) == "—"
    assert runner.mean_std([0.5], scale=100) == "50.00"
    assert runner.mean_std([0.1, 0.3], scale=100) == "20.00 ± 14.14"


@pytest.mark.parametrize(
    "argv, message",
    [(["--only", "9"], "--only"), (["--seeds", "1,1"], "--seeds"), (["--seeds", "a"], "--seeds")],
)
def test_bad_arguments_name_the_flag(argv, message, capsys):
    runner = load_runner()
    with pytest.raises(SystemExit):
        runner.main(argv)
    assert message in capsys.readouterr().err
