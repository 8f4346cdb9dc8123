"""examples/hf_trainer.py on the shipped GLUE data: a few Trainer steps end to end."""

from __future__ import annotations

import pytest
from _helpers import DATA_DIR

pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "glue" / "sst2").exists(), reason="the shared data folder ../shared/data is missing"
)


def test_two_glue_tasks_train_and_report_accuracy(tmp_path, capsys):
    from examples import hf_trainer as module

    scores = module.main(
        [
            "--steps",
            "2",
            "--max-train",
            "32",
            "--max-eval",
            "16",
            "--batch-size",
            "4",
            "--data-dir",
            str(DATA_DIR),
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert set(scores) == {"sst2", "mrpc"} and all(0.0 <= s <= 1.0 for s in scores.values())
    assert "cosine {'sst2__mrpc'" in capsys.readouterr().out
