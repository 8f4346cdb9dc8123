"""Evaluation of every task: eval loss, GLUE metrics, and ROUGE of generated summaries."""

from __future__ import annotations

import torch

from . import data as mdata
from . import metrics as mmetrics

__all__ = ["evaluate"]


def _chunks(rows: list[dict], size: int) -> list[list[dict]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


@torch.no_grad()
def _classification(model, task: str, rows: list[dict], pad: int, batch_size: int, bar) -> dict[str, float]:
    total, preds, labels = 0.0, [], []
    for chunk in bar(_chunks(rows, batch_size), f"eval {task}"):
        batch = mdata.collate_classification(chunk, pad)
        logits = model.classification_logits(task, batch)
        total += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
        preds += logits.argmax(-1).tolist()
        labels += batch["labels"].tolist()
    return {"loss": total / len(rows), **mmetrics.classification_metrics(task, preds, labels)}


@torch.no_grad()
def _summarization(model, task: str, rows: list[dict], tokenizer, args, bar) -> dict:
    pad, total, predictions, references = tokenizer.pad_token_id, 0.0, [], []
    for chunk in bar(_chunks(rows, args.eval_batch_size), f"eval {task}"):
        total += float(model.summarization_loss(mdata.collate_summarization_train(chunk, pad))) * len(chunk)
        prompts = mdata.collate_generation_prompts(chunk, pad)
        gen = model.generate(prompts, args.max_target_len, args.num_beams, pad, tokenizer.eos_token_id)
        predictions += [tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen]
        references += [r["reference"] for r in chunk]
    res: dict = {"loss": total / len(rows), **mmetrics.rouge(predictions, references)}
    res["example"] = {"prediction": predictions[0], "reference": references[0]}
    return res


def evaluate(args, model, tasks: dict[str, dict], tokenizer, progress: bool) -> dict[str, dict]:
    """Eval loss of every task, its GLUE metrics, and ROUGE-1/2/L F1 of greedy (or
    ``--num-beams``) summaries, on the rows of ``--eval-split``; the model is left in train mode."""
    from tqdm.auto import tqdm

    def bar(items, desc):
        return tqdm(items, desc=desc, leave=False, disable=not progress)

    model.eval()
    try:
        results = {}
        for task, info in tasks.items():
            if info["kind"] == "cls":
                results[task] = _classification(
                    model, task, info["eval"], tokenizer.pad_token_id, args.eval_batch_size, bar
                )
            else:
                results[task] = _summarization(model, task, info["eval"], tokenizer, args, bar)
    finally:
        model.train()
    return results
