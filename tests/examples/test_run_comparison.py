"""examples/run_comparison.py: its tables on hand-made results (Δm%, paired differences), and
rows × seeds on the tiny preset with --collect re-tabulating them."""

from __future__ import annotations

import pytest
from _helpers import DATA_DIR

from examples import run_comparison as runner


def _result(label: str, seed: int, tasks: dict, sps: float = 1.0, mem: float = 100.0) -> dict:
    final = {t: {"loss": 1.0, **m} for t, m in tasks.items()}
    metrics = {"final": {"tasks": final}, "seconds_per_step": sps, "peak_memory_mb": mem, "config": {"seed": seed}}
    return {"label": label, "flags": [], "seed": seed, "wall": 10.0, "metrics": metrics}


def _hand_made() -> list[list[dict]]:
    """Two seeds; single-task SST-2 accuracy 0.80/0.90 (mean 0.85) and AESLC ROUGE 0.2/0.1/0.2."""
    rouge = {"rouge1": 0.2, "rouge2": 0.1, "rougeL": 0.2}
    single = [
        [_result("single-task sst2", s, {"sst2": {"accuracy": a}}) for s, a in ((0, 0.80), (1, 0.90))],
        [_result("single-task aeslc", s, {"aeslc": rouge}) for s in (0, 1)],
    ]
    mean = [
        _result("multi-task mean", 0, {"sst2": {"accuracy": 0.85}, "aeslc": rouge}),
        _result("multi-task mean", 1, {"sst2": {"accuracy": 0.85}, "aeslc": {"rouge1": 0.1, "rouge2": 0.1, "rougeL": 0.2}}),
    ]
    pcgrad = [
        _result("multi-task pcgrad", 0, {"sst2": {"accuracy": 0.935}, "aeslc": rouge}, sps=2.0, mem=300.0),
        _result("multi-task pcgrad", 1, {"sst2": {"accuracy": 0.85}, "aeslc": rouge}, sps=4.0, mem=500.0),
    ]
    return [*single, mean, pcgrad]


def test_delta_m_and_paired_differences_by_hand():
    found = _hand_made()
    text = runner.table(found, "two")
    # pcgrad: SST-2 +10% (0.935 vs 0.85) and 0%, AESLC 0% → Δm +5.00, +0.00 → +2.50 ± 3.54.
    row = "| multi-task pcgrad | 2 | 89.25 ± 6.01 | 20.00 ± 0.00 | 10.00 ± 0.00 | 20.00 ± 0.00 | +2.50 ± 3.54 |"
    assert f"{row} 3.00 ± 1.41 | 400 ± 141 | 10 ± 0 |" in text
    # mean, seed 1: AESLC ROUGE-1 −50%, mean over ROUGE-1/2/L −16.67%; over tasks −8.33.
    assert "| multi-task mean | 2 | 85.00 ± 0.00 |" in text and "| -4.17 ± 5.89 |" in text  # Δm (0, −8.33)
    assert "| single-task sst2 | 2 | 85.00 ± 7.07 | — | — | — | — |" in text
    paired = runner.paired_table(found, "two")
    # pcgrad − mean per seed: SST-2 (+8.5, 0) points; ROUGE-1 (0, +10); Δm (+5 − 0, 0 − (−8.33)).
    assert "| multi-task pcgrad | 2 | +4.25 ± 6.01 | +5.00 ± 7.07 | +0.00 ± 0.00 | +0.00 ± 0.00 | +6.67 ± 2.36 |" in paired
    assert "multi-task mean |" not in paired.split("\n", 2)[2]  # the reference row is not compared with itself


def test_cosine_table_by_hand():
    found = _hand_made()
    found[3][0]["cosines"] = {"sst2__aeslc": [0.2, -0.1, None, -0.3, 0.0]}  # pcgrad seed 0: 2 of 4 < 0
    found[3][1]["cosines"] = {"sst2__aeslc": [0.1, 0.3]}  # seed 1: none
    text = runner.cosine_table(found)
    # Pooled over the six logged steps: mean (0.2 − 0.1 − 0.3 + 0 + 0.1 + 0.3)/6 = +0.033;
    # conflicts per seed 50 % and 0 % → 25 ± 35.
    assert "| multi-task pcgrad | sst2 / aeslc | +0.033 | [-0.300, +0.300] | 25 ± 35 | 6 |" in text
    assert "single-task" not in text  # rows without cosines are left out
    assert runner.cosine_table(found[:2]) == "(no run logged task-gradient cosines)"


def test_setups_rows_and_criteria():
    labels = [label for label, _ in runner.rows("four")]
    assert labels[:4] == ["single-task sst2", "single-task mrpc", "single-task rte", "single-task aeslc"]
    assert {"multi-task sum", "multi-task mean", "multi-task famo", "multi-task mgda"} <= set(labels)
    assert any("refresh every 4" in label for label in labels)
    headers = [c[0] for c in runner.columns("four")]
    assert headers == ["sst2 acc", "mrpc acc", "mrpc F1", "rte acc", "aeslc R-1", "R-2", "R-L"]
    assert [(c.task, c.metric) for c in runner.criteria("four")] == [
        ("sst2", "accuracy"), ("mrpc", "f1"), ("rte", "accuracy"), ("aeslc", "rouge1"), ("aeslc", "rouge2"), ("aeslc", "rougeL"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "99"], "--only"),
        (["--only", "nope"], "--only"),
        (["--seeds", "1,1"], "--seeds"),
        (["--seeds", "a"], "--seeds"),
    ],
)
def test_bad_arguments_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        runner.main(argv)
    assert message in capsys.readouterr().err


BUDGET = ["--preset", "tiny", "--steps", "2", "--max-train", "8", "--max-eval", "4", "--threads", "1"]


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"the shared data folder {DATA_DIR} is missing")
def test_rows_seeds_results_file_and_collect(tmp_path):
    for module in ("transformers", "peft", "datasets", "rouge_score"):
        pytest.importorskip(module, reason="transformers/peft/datasets/rouge-score not installed")
    results_md = tmp_path / "results.md"
    common = [*BUDGET, "--out", str(tmp_path / "runs"), "--results", str(results_md)]
    found = runner.main([*common, "--only", "1,multi-task pcgrad", "--seeds", "0,1"])
    assert [[r["label"] for r in row] for row in found] == [["single-task aeslc"] * 2, ["multi-task pcgrad"] * 2]
    assert [r["seed"] for r in found[1]] == [0, 1]
    text = results_md.read_text()
    assert "| single-task aeslc | 2 | — |" in text  # no classification metric there
    assert "| multi-task pcgrad | 2 |" in text and " ± " in text
    assert "no paired differences" in text  # no mean row
    assert "--method pcgrad" in text and "--single-task aeslc" in text
    assert "--task-lr cls=0.003" in text  # the head learning rate every row shares
    assert "| multi-task pcgrad | sst2 / aeslc |" in text  # its logged cosines, summarised
    for row in found:
        for r in row:
            assert r["wall"] > 0 and r["metrics"]["seconds_per_step"] > 0 and r["metrics"]["peak_memory_mb"] > 0

    # --collect trains nothing: it finds both seeds of pcgrad, and nothing for mean.
    collected = runner.main([*common, "--only", "3,4", "--seeds", "0,1,2", "--collect"])
    assert collected[0] == []
    assert [r["seed"] for r in collected[1]] == [0, 1]
    assert [r["metrics"] for r in collected[1]] == [r["metrics"] for r in found[1]]
    assert "multi-task mean" not in results_md.read_text().split("Paired")[0]

    # A different budget is not mixed into the table.
    with pytest.raises(SystemExit, match="another budget"):
        runner.main([*common, "--steps", "3", "--only", "4", "--collect"])
