"""Exact resume: the checkpoint of a run and the check that a resumed run is the same run.

The batch order is a pure function of (seed, task, step), so the checkpoint needs only the
trainable parameters, the optimizer state (gradsurg's method state included), the step, the RNG
states and the log history; the frozen weights are rebuilt from the same flags (checked).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

__all__ = ["RESUME_KEYS", "jsonable", "load_checkpoint", "save_checkpoint"]

#: Flags that must match between a run and the run it resumes (they define the model/data/run).
RESUME_KEYS = (
    "preset",
    "model",
    "tokenizer",
    "seed",
    "glue",
    "summarization",
    "single_task",
    "method",
    "full_finetune",
    "lora_r",
    "lora_alpha",
    "lora_targets",
    "pooling",
    "batch_size",
    "schedule",
    "grad_accum",
    "refresh_every",
    "features",
    "amp",
    "max_train",
    "max_source_len",
    "max_target_len",
)


def jsonable(value):
    """``value`` with paths as strings, recursively (for JSON and for comparing configs)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def save_checkpoint(path: Path, args, model, optimizer, step: int, history: dict, scaler=None) -> None:
    """Write ``checkpoint.pt`` atomically: trainable params, optimizer (+gradsurg) state,
    GradScaler state, step, RNG states, config and history."""
    path.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "trainable": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "config": {k: jsonable(getattr(args, k)) for k in RESUME_KEYS},
        "history": history,
    }
    tmp = path / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path / "checkpoint.pt")


def load_checkpoint(path: Path, args, model, optimizer, scaler=None) -> tuple[int, dict]:
    """Restore what :func:`save_checkpoint` wrote; returns ``(step, history)``. Raises
    ``ValueError`` naming ``--resume`` when the checkpoint's run differs from this one."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    mine = {k: jsonable(getattr(args, k)) for k in RESUME_KEYS}
    diff = {k: (state["config"].get(k), v) for k, v in mine.items() if state["config"].get(k) != v}
    if diff:
        raise ValueError(
            "--resume: the checkpoint was made with different settings: "
            + ", ".join(f"{k}: {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        )
    if state["step"] > args.steps:
        raise ValueError(f"--resume: the checkpoint is at step {state['step']}, beyond --steps {args.steps}")
    params = dict(model.named_parameters())
    missing = [n for n in params if params[n].requires_grad and n not in state["trainable"]]
    if missing:
        raise ValueError(f"--resume: the checkpoint lacks trainable parameters {missing[:3]}...")
    with torch.no_grad():
        for n, t in state["trainable"].items():
            params[n].copy_(t)
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    return state["step"], state["history"]
