"""The tasks of a run: their tokenised rows, their per-step batch sizes and their losses.

A task is named by its data set (``sst2``, ``aeslc``) and is of one of two kinds: ``cls`` (a
GLUE classification head) or ``sum`` (summarization through the LM head).
"""

from __future__ import annotations

import argparse

import torch

from . import data as mdata

__all__ = ["joint_losses", "load_tasks", "task_batch_sizes", "task_loss", "training_batch"]


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


def _pad_to(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad every ``(B, S)`` tensor of a collated batch to ``width`` columns."""
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}
    out = {}
    for key, value in batch.items():
        if key in fill and value.dim() == 2:
            extra = torch.full((value.shape[0], width - value.shape[1]), fill[key], dtype=value.dtype)
            value = torch.cat([value, extra], 1)
        out[key] = value
    return out


def joint_losses(model, tasks: dict[str, dict], batch: dict[str, list[dict]], pad_id: int):
    """Every task's loss from **one** decoder pass over all tasks' rows: ``(losses, h)``, h the
    shared representation (the last hidden state) that ``backward(losses, features=h)`` needs.

    The rows are right-padded to one width; causal attention with the padding masked leaves
    each row's hidden states as in its own task's pass. Task t's loss depends on its rows of h
    only, so the per-task gradients with respect to h live on disjoint rows: their Gram matrix
    is diagonal (no conflicts to resolve at this level; methods still see the norms).
    """
    parts = {}
    for task, rows in batch.items():
        if tasks[task]["kind"] == "cls":
            parts[task] = mdata.collate_classification(rows, pad_id)
        else:
            parts[task] = mdata.collate_summarization_train(rows, pad_id)
    width = max(p["input_ids"].shape[1] for p in parts.values())
    parts = {t: _pad_to(p, width, pad_id) for t, p in parts.items()}
    ids = torch.cat([p["input_ids"] for p in parts.values()])
    mask = torch.cat([p["attention_mask"] for p in parts.values()])
    h = model.hidden(ids, mask)
    losses, start = {}, 0
    for task, p in parts.items():
        rows = slice(start, start + p["input_ids"].shape[0])
        start = rows.stop
        if tasks[task]["kind"] == "cls":
            logits = model.heads[task](model.pool(h[rows], p["attention_mask"]))
            losses[task] = torch.nn.functional.cross_entropy(logits, p["labels"])
        else:
            losses[task] = model.lm_loss_from_hidden(h[rows], p["labels"])
    return losses, h
