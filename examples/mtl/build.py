"""Building a run from its flags: the model (backbone, LoRA, heads) and the optimizer.

The method is built by :func:`gradsurg.methods.build_method`, which hands a method only what it
declares in ``Method.needs`` (the task count, the last shared layer): no per-method branches.
"""

from __future__ import annotations

import argparse
import random
import warnings
from pathlib import Path

import torch

import gradsurg

from . import data as mdata
from . import model as mmodel

__all__ = ["build_model", "build_optimizer", "make_scaler", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (initialisation, LoRA, dropout)."""
    random.seed(seed)
    torch.manual_seed(seed)


def _needs_double_backward(args: argparse.Namespace) -> bool:
    """Whether the method differentiates through the task gradients (``cosreg``)."""
    if args.single_task is not None:
        return False
    return issubclass(gradsurg.methods.method_class(args.method), gradsurg.methods.DoubleBackwardMethod)


def build_model(args: argparse.Namespace, tokenizer) -> mmodel.MultiTaskModel:
    """Backbone (+ LoRA unless ``--full-finetune``) and the GLUE heads, seeded by ``--seed``."""
    seed_everything(args.seed)
    lm = mmodel.build_backbone(
        args.preset,
        args.model,
        len(tokenizer),
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        getattr(tokenizer, "bos_token_id", None),
        # The CPU kernel of scaled-dot-product attention has no second derivative.
        attn_implementation="eager" if _needs_double_backward(args) else None,
    )
    if args.full_finetune:
        for p in lm.parameters():
            p.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        names = {n.split(".")[-1] for n, _ in lm.named_modules()}
        missing = [t for t in args.lora_targets if t not in names]
        if missing:
            raise ValueError(f"--lora-targets: the model has no modules named {missing}")
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=list(args.lora_targets),
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            # peft calls a transformers method that transformers 5 deprecates; not ours to fix.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            lm = get_peft_model(lm, config)
    glue = {t: mdata.GLUE_TASKS[t].num_labels for t in args.tasks if t in args.glue}
    return mmodel.MultiTaskModel(lm, glue, pooling=args.pooling)


def make_scaler(args: argparse.Namespace) -> torch.amp.GradScaler | None:
    """A GradScaler for ``--amp fp16`` (float16 gradients underflow without one), else None."""
    if args.amp != "fp16":
        return None
    return torch.amp.GradScaler("cuda" if torch.cuda.is_available() else "cpu")


def build_optimizer(
    args: argparse.Namespace, model: mmodel.MultiTaskModel, scaler: torch.amp.GradScaler | None = None
) -> torch.optim.Optimizer:
    """AdamW with one group for the shared backbone parameters (``--lr``) and one per GLUE head
    (``--task-lr``), wrapped in ``GradSurgery`` for multi-task runs (with ``--refresh-every`` and
    the fp16 ``scaler``, which GradSurgery unscales before the method sees the gradients)."""
    shared = [p for p in model.lm.parameters() if p.requires_grad]
    groups = [{"params": shared, "lr": args.lr, "name": "shared"}]
    for task, head in model.heads.items():
        groups.append({"params": list(head.parameters()), "lr": args.task_lr.get(task, args.lr), "name": task})
    base = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    if args.single_task is not None:
        return base
    method = gradsurg.methods.build_method(
        args.method, num_tasks=len(args.tasks), layer=mmodel.last_shared_layer_params(model)
    )
    weights = {t: args.task_weights.get(t, 1.0) for t in args.tasks}
    return gradsurg.GradSurgery(
        base,
        method=method,
        shared=shared,
        task_weights=weights,
        scaler=scaler,
        refresh_every=args.refresh_every,
        tasks=list(args.tasks),
        trace=Path(args.output_dir) / "trace.jsonl" if getattr(args, "trace", False) else None,
    )
