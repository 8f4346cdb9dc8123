"""The training loop of a run: :func:`run` trains and evaluates as the flags say.

Each optimizer step draws one batch per task and hands the losses dict to ``GradSurgery``. The
library's own features do the rest: ``--grad-accum K`` adds K micro-batches with
``backward(losses, sync=False)`` and runs the surgery once on the summed per-task gradients (the
big batch's update) when the method accumulates (``method.accumulates``); loss-space methods and
``cosreg``, which weigh a batch's losses before any gradient exists, run on each micro-batch and
their gradients add up. ``--amp fp16`` hands a GradScaler to ``GradSurgery(scaler=)``;
``--refresh-every`` is ``GradSurgery(refresh_every=)``; ``--features`` runs every task through
one decoder pass and hands its output to ``backward(losses, features=h)`` (representation-level
surgery); the log rows come from
:func:`gradsurg.integrations.stats_scalars`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch

from gradsurg.integrations import stats_scalars

from . import model as mmodel
from .build import build_model, build_optimizer, make_scaler
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .report import pairs, write_outputs
from .tasks import joint_losses, load_tasks, task_batch_sizes, task_loss, training_batch

__all__ = ["autocast", "peak_memory_mb", "run", "train_step"]


def autocast(amp: str):
    """The forward passes' autocast context for ``--amp`` (a no-op context for ``off``)."""
    if amp == "off":
        return contextlib.nullcontext()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def peak_memory_mb() -> float:
    """Peak memory of this process so far, MiB: the CUDA allocator's peak on a GPU, else the peak
    resident set size (which includes Python, torch and the frozen weights)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def train_step(args, model, optimizer, tasks: dict[str, dict], sizes: dict[str, int], step: int, pad: int, scaler=None):
    """One optimizer step (``--grad-accum`` micro-batches); returns ``(mean losses, stats)``,
    ``stats`` being gradsurg's ``SurgeryStats`` of the step (None for a single-task run)."""
    names = list(tasks)
    optimizer.zero_grad()
    step_losses = dict.fromkeys(names, 0.0)
    stats = None
    single = args.single_task is not None
    if getattr(args, "task_batches", "joint") == "homogeneous" and not single:
        return _homogeneous_step(args, model, optimizer, tasks, sizes, step, pad, scaler)
    for micro in range(args.grad_accum):
        batch = training_batch(tasks, sizes, step * args.grad_accum + micro, args.seed)
        features = None
        with autocast(args.amp):
            if args.features:
                losses, features = joint_losses(model, tasks, batch, pad)
            else:
                losses = {t: task_loss(model, t, tasks[t]["kind"], batch[t], pad) for t in names}
        for t in names:
            step_losses[t] += float(losses[t].detach()) / args.grad_accum
        scaled = {t: loss / args.grad_accum for t, loss in losses.items()}
        if scaler is not None:
            scaled = {t: scaler.scale(loss) for t, loss in scaled.items()}
        if single:
            (scaled[names[0]] * args.task_weights.get(names[0], 1.0)).backward()
        else:
            last = micro == args.grad_accum - 1
            sync = last or not optimizer.method.accumulates
            result = optimizer.backward(scaled, sync=sync, features=features)
            stats = result if result is not None else stats
    _optimizer_step(optimizer, scaler)
    return step_losses, stats


def _optimizer_step(optimizer, scaler=None) -> None:
    """The optimizer's step, through the GradScaler when there is one."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _homogeneous_step(args, model, optimizer, tasks: dict[str, dict], sizes: dict[str, int], step: int, pad: int, scaler=None):
    """One optimizer step of task-homogeneous micro-batches: for each of ``--grad-accum`` rounds,
    one micro-batch per task in turn (the rows the joint schedule would give that task), each
    loss divided by the window's micro-batches; one surgery over the window."""
    names = list(tasks)
    window = args.grad_accum * len(names)
    step_losses = dict.fromkeys(names, 0.0)
    stats = None
    for micro in range(args.grad_accum):
        batch = training_batch(tasks, sizes, step * args.grad_accum + micro, args.seed)
        for i, t in enumerate(names):
            with autocast(args.amp):
                loss = task_loss(model, t, tasks[t]["kind"], batch[t], pad)
            step_losses[t] += float(loss.detach()) / args.grad_accum
            scaled = loss / window
            if scaler is not None:
                scaled = scaler.scale(scaled)
            last = micro == args.grad_accum - 1 and i == len(names) - 1
            result = optimizer.backward({t: scaled}, sync=last)
            stats = result if result is not None else stats
    _optimizer_step(optimizer, scaler)
    return step_losses, stats


def _log_row(args, step: int, seconds: float, lr: float, losses: dict[str, float], stats) -> dict:
    """One ``log.csv`` row: losses, surgery weights, conflicts and cosines of a step."""
    names = list(losses)
    row = {"step": step, "lr": lr, "seconds": round(seconds, 4)}
    for t in names:
        row[f"loss_{t}"] = losses[t]
        row[f"weight_{t}"] = args.task_weights.get(t, 1.0)
    if stats is not None:
        scalars = stats_scalars(stats, prefix="g")
        for t in names:
            row[f"weight_{t}"] = scalars.get(f"g/weight/{t}", row[f"weight_{t}"])
        row["num_conflicts"] = stats.num_conflicts
        for i, j in pairs(names):
            row[f"cos_{names[i]}__{names[j]}"] = scalars.get(f"g/cos/{names[i]}__{names[j]}")
    return row


def run(args) -> dict:
    """Train and evaluate as the flags (:func:`examples.mtl.cli.parse_args`) say; writes the run
    folder and returns the contents of its ``metrics.json``."""
    from tqdm.auto import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.quiet
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = mmodel.load_tokenizer(args.preset, args.model, args.tokenizer)
    tasks = load_tasks(args, tokenizer)
    model = build_model(args, tokenizer)
    model.train()
    scaler = make_scaler(args)
    optimizer = build_optimizer(args, model, scaler)
    names = list(tasks)
    sizes = task_batch_sizes(args, {t: len(tasks[t]["train"]) for t in names})
    pad = tokenizer.pad_token_id
    params = list(model.parameters())
    sizes_info = {
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "total_params": sum(p.numel() for p in params),
    }

    start, history = 0, {"log": [], "evals": []}
    if args.resume is not None:
        start, history = load_checkpoint(args.resume, args, model, optimizer, scaler)

    def extra() -> dict:
        seconds = sum(r["seconds"] for r in history["log"])
        return {
            "seconds_per_step": seconds / max(len(history["log"]), 1),
            "peak_memory_mb": peak_memory_mb(),
            **sizes_info,
        }

    def evaluate_now(step: int) -> None:
        history["evals"].append({"step": step, "tasks": evaluate(args, model, tasks, tokenizer, progress)})

    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="train", disable=not progress)
    for step in bar:
        t0 = time.perf_counter()
        losses, stats = train_step(args, model, optimizer, tasks, sizes, step, pad, scaler)
        seconds = time.perf_counter() - t0
        history["log"].append(_log_row(args, step + 1, seconds, optimizer.param_groups[0]["lr"], losses, stats))
        bar.set_postfix({t: f"{losses[t]:.3f}" for t in names})
        done = step + 1
        if (args.eval_every and done % args.eval_every == 0) or done == args.steps:
            evaluate_now(done)
        if (args.save_every and done % args.save_every == 0) or done == args.steps:
            save_checkpoint(out / "checkpoint", args, model, optimizer, done, history, scaler)
            write_outputs(args, out, history, names, extra())
    bar.close()

    if not history["evals"] or history["evals"][-1]["step"] != args.steps:
        evaluate_now(args.steps)
    write_outputs(args, out, history, names, extra())
    with open(out / "metrics.json") as f:
        return json.load(f)
