"""The README's main command (make demo → python -m examples.demo) end to end on the tiny preset."""

from __future__ import annotations

import pytest

for _mod in ("transformers", "peft", "datasets", "rouge_score"):
    pytest.importorskip(_mod, reason="transformers/peft/datasets/rouge-score not installed")

from _helpers import DATA_DIR

from examples import demo

PNG = b"\x89PNG\r\n\x1a\n"

if not (DATA_DIR / "glue" / "sst2").is_dir() or not (DATA_DIR / "summarization" / "aeslc").is_dir():
    pytest.skip(f"shared data not found at {DATA_DIR}", allow_module_level=True)


def test_demo_runs_method_and_baseline_side_by_side(tmp_path, capsys):
    out = tmp_path / "demo"
    results = demo.main(
        ["--preset", "tiny", "--steps", "3", "--max-train", "16", "--max-eval", "4", "--max-source-len", "24",
         "--max-target-len", "4", "--eval-batch-size", "4", "--threads", "1", "--quiet",
         "--data-dir", str(DATA_DIR), "--output-dir", str(out)]
    )  # fmt: skip
    assert list(results) == ["pcgrad", "sum"]
    for method, metrics in results.items():
        assert metrics["config"]["method"] == method and metrics["config"]["steps"] == 3
        assert metrics["config"]["seed"] == 0 and metrics["config"]["max_eval"] == 4
        assert set(metrics["final"]["tasks"]) == {"sst2", "aeslc"}
        assert (out / method / "metrics.json").is_file()
    for png in ("loss_curves.png", "cosine.png"):
        assert (out / png).read_bytes()[:8] == PNG, png
    printed = capsys.readouterr().out
    assert "| task | metric | pcgrad | sum |" in printed
    for line in ("| sst2 | accuracy |", "| aeslc | rouge1 |", "| aeslc | rougeL |", "| all | s / step |"):
        assert line in printed, line
    assert (out / "comparison.md").read_text().startswith("| task | metric | pcgrad | sum |")
    assert "pcgrad: cosine sst2/aeslc in [" in printed and "negative on" in printed
    # The baseline's Gram trace, every Gram method replayed on it.
    import gradsurg

    steps = gradsurg.read_trace(out / "sum" / "trace.jsonl")
    assert [s.step for s in steps] == [1, 2, 3] and all(s.method == "sum" for s in steps)
    assert "every Gram method replayed on the sum run's gradients" in printed
    assert "| mgda |" in printed and "| upgrad |" in printed
    for png in ("cosines.png", "shares.png", "deviation.png"):
        assert (out / "sum" / "report" / png).read_bytes()[:8] == PNG, png


def test_demo_refuses_the_same_method_twice(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--method", "sum", "--baseline", "sum"])
    assert "--baseline" in capsys.readouterr().err
