"""Loading data from a temporary folder in the documented layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("datasets", reason="transformers/peft/datasets/rouge-score not installed")
import _helpers

from examples.mtl import data


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    pair = [
        {"sentence1": f"first {i}", "sentence2": f"second {i}", "label": i % 2} for i in range(10)
    ]
    _jsonl(tmp_path / "glue" / "rte" / "train.jsonl", pair)
    _jsonl(tmp_path / "glue" / "rte" / "validation.jsonl", pair[:4])
    single = [{"sentence": f"sentence number {i}", "label": i % 2} for i in range(12)]
    _csv(tmp_path / "glue" / "sst2" / "train.csv", single)
    _csv(tmp_path / "glue" / "sst2" / "validation.csv", single[:5])
    docs = [
        {"body": f"a long document number {i} about things", "headline": f"doc {i}", "extra": i}
        for i in range(8)
    ]
    _jsonl(tmp_path / "summarization" / "mynews" / "train.jsonl", docs)
    _jsonl(tmp_path / "summarization" / "mynews" / "validation.jsonl", docs[:3])
    _csv(tmp_path / "summarization" / "csvsum" / "train.csv", docs)
    _csv(tmp_path / "summarization" / "csvsum" / "validation.csv", docs[:2])
    return tmp_path


def test_glue_jsonl_pair_and_csv_single(data_dir: Path):
    train, val = data.load_glue("rte", data_dir, max_train=None, max_eval=None, seed=0)
    assert len(train) == 10 and len(val) == 4
    train, val = data.load_glue("sst2", data_dir, max_train=5, max_eval=None, seed=0)
    assert len(train) == 5 and len(val) == 5
    assert set(train["label"]) <= {0, 1}
    tok = data.ByteTokenizer()
    rows = data.encode_classification(val, "sst2", tok, max_len=8)
    assert all(len(r["input_ids"]) <= 8 for r in rows)
    rows = data.encode_classification(
        data.load_glue("rte", data_dir, None, None, 0)[1], "rte", tok, max_len=10
    )
    assert all(len(r["input_ids"]) <= 10 and tok.eos_token_id in r["input_ids"] for r in rows)


@pytest.mark.parametrize("name", ["mynews", "csvsum"])
def test_summarization_custom_columns(data_dir: Path, name: str):
    train, val = data.load_summarization(name, data_dir, "body", "headline", None, None, seed=0)
    assert train.column_names == ["text", "summary"]
    assert len(train) == 8 and len(val) in (2, 3)
    assert train[0]["summary"].startswith("doc ")
    rows = data.encode_summarization(val, data.ByteTokenizer(), max_source_len=12, max_target_len=4)
    assert all(len(r["target_ids"]) <= 4 and r["target_ids"][-1] == 257 for r in rows)


def test_summarization_errors_name_the_flag(data_dir: Path):
    with pytest.raises(ValueError, match="--summary-column"):
        data.load_summarization("mynews", data_dir, "body", "nope", None, None, seed=0)
    with pytest.raises(ValueError, match="--text-column"):
        data.load_summarization("mynews", data_dir, None, None, None, None, seed=0)
    with pytest.raises(ValueError, match="--glue"):
        data.load_glue("nosuchtask", data_dir, None, None, 0)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        data.load_glue("mrpc", data_dir, None, None, 0)  # no local folder, Hub disabled


def test_script_flags_accept_the_layout(data_dir: Path, tmp_path: Path):
    pytest.importorskip(
        "transformers", reason="transformers/peft/datasets/rouge-score not installed"
    )
    pytest.importorskip("peft", reason="transformers/peft/datasets/rouge-score not installed")
    pytest.importorskip(
        "rouge_score", reason="transformers/peft/datasets/rouge-score not installed"
    )
    script = _helpers.load_script()
    result = script.main(
        [
            "--preset",
            "tiny",
            "--tokenizer",
            "byte",
            "--data-dir",
            str(data_dir),
            "--glue",
            "rte",
            "--summarization",
            "mynews",
            "--text-column",
            "body",
            "--summary-column",
            "headline",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--max-target-len",
            "4",
            "--max-source-len",
            "24",
            "--method",
            "mean",
            "--quiet",
            "--output-dir",
            str(tmp_path / "run"),
            "--threads",
            "1",
        ]
    )
    assert set(result["final"]["tasks"]) == {"rte", "mynews"}


def test_batch_indices_cover_each_epoch():
    seen = [i for s in range(5) for i in data.batch_indices(10, 2, s, seed=3, task_index=0)]
    assert sorted(seen) == list(range(10))
    assert data.batch_indices(10, 4, 7, 1, 2) == data.batch_indices(10, 4, 7, 1, 2)
