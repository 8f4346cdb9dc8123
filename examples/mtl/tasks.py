"""The tasks of a run: their tokenised rows, their per-step batch sizes and their losses.

A task is named by its data set (``sst2``, ``aeslc``) and is of one of two kinds: ``cls`` (a
GLUE classification head) or ``sum`` (summarization through the LM head).
"""

from __future__ import annotations

import argparse

import torch

from . import data as mdata

__all__ = ["load_tasks", "task_batch_sizes", "task_loss", "training_batch"]


def load_tasks(args: argparse.Namespace, tokenizer) -> dict[str, dict]:
    """Tokenised train/evaluation rows of every task: ``{task: {"kind", "train", "eval"}}``."""
    out = {}
    for task in args.tasks:
        if task in args.glue:
            train, val = mdata.load_glue(task, args.data_dir, args.max_train, args.max_eval, args.seed, args.eval_split)
            out[task] = {
                "kind": "cls",
                "train": mdata.encode_classification(train, task, tokenizer, args.max_source_len),
                "eval": mdata.encode_classification(val, task, tokenizer, args.max_source_len),
            }
        else:
            train, val = mdata.load_summarization(
                args.summarization,
                args.data_dir,
                args.text_column,
                args.summary_column,
                args.max_train,
                args.max_eval,
                args.seed,
                args.eval_split,
            )
            out[task] = {
                "kind": "sum",
                "train": mdata.encode_summarization(train, tokenizer, args.max_source_len, args.max_target_len),
                "eval": mdata.encode_summarization(val, tokenizer, args.max_source_len, args.max_target_len),
            }
        if not out[task]["train"] or not out[task]["eval"]:
            raise ValueError(f"--data-dir: task {task!r} has an empty train or validation split")
    return out


def task_batch_sizes(args: argparse.Namespace, sizes: dict[str, int]) -> dict[str, int]:
    """Per-task micro-batch sizes under ``--schedule``.

    ``round-robin``: ``--batch-size`` rows of every task. ``proportional``: still one batch per
    task per step (gradient surgery needs every task's loss at each step), sized in proportion
    to the training sets (``--batch-size`` × number of tasks rows in all, at least one per task).
    """
    if args.schedule == "round-robin" or len(sizes) == 1:
        return dict.fromkeys(sizes, args.batch_size)
    total = args.batch_size * len(sizes)
    n = sum(sizes.values())
    return {t: max(1, round(total * s / n)) for t, s in sizes.items()}


def training_batch(tasks: dict[str, dict], sizes: dict[str, int], micro_step: int, seed: int) -> dict[str, list[dict]]:
    """Every task's rows of micro-batch ``micro_step``: a pure function of its arguments (the
    sampler keeps no state, so a resumed run sees the batches of the uninterrupted one)."""
    out = {}
    for ti, (task, info) in enumerate(tasks.items()):
        rows = info["train"]
        out[task] = [rows[i] for i in mdata.batch_indices(len(rows), sizes[task], micro_step, seed, ti)]
    return out


def task_loss(model, task: str, kind: str, rows: list[dict], pad_id: int) -> torch.Tensor:
    """The loss of one task on a list of tokenised rows."""
    if kind == "cls":
        return model.classification_loss(task, mdata.collate_classification(rows, pad_id))
    return model.summarization_loss(mdata.collate_summarization_train(rows, pad_id))
