"""Hugging Face ``Trainer`` with gradient surgery: change one class name.

::

    from gradsurg.integrations.hf import GradSurgeryTrainer

    trainer = GradSurgeryTrainer(model=model, args=args, train_dataset=ds, surgery="pcgrad")
    trainer.train()

Two ways to hold the data:

- **joint batches** (``train_dataset=``): every batch feeds every task; the per-task losses
  come from the model output — a ``losses`` mapping (task name → scalar loss) in the returned
  dict or ``ModelOutput`` — or from ``task_losses(model, inputs) -> dict``;
- **one task per batch** (``train_datasets={task: dataset}``, the LLM way: a classification
  set and a generation set, each with its own collator): the trainer builds a
  :class:`~gradsurg.data.MultiTaskBatchSampler` (``mixing=``), each batch from one task, and
  ``task_losses(model, task, inputs) -> loss``; one surgery runs per accumulation window,
  over the tasks of its micro-batches (``gradient_accumulation_steps`` defaults to the number
  of tasks, so that each window holds every task under round-robin mixing).
  ``eval_datasets={task: dataset}`` evaluates each task (its mean loss, and
  ``task_metrics[task](model, dataset) -> dict`` when given), logged as ``eval_<task>_<key>``.

Trainer's
own machinery keeps working: optimizer and scheduler creation (the optimizer is wrapped in
:class:`~gradsurg.GradSurgery`), ``max_grad_norm``, ``gradient_accumulation_steps`` (one surgery
of the whole accumulated batch, through ``backward(..., sync=False)``), ``fp16`` (accelerate's
GradScaler is handed to gradsurg) and ``bf16``, checkpoints (the method's state is in the
optimizer's state dict) and multi-process launch (DDP through gradsurg's data-parallel
reduce). Every ``logging_steps`` the logs get the conflict statistics averaged over the steps
since the last log (``gradsurg/cos/<a>__<b>``, … see :func:`gradsurg.integrations.stats_scalars`),
so ``report_to="tensorboard"`` or ``"wandb"`` plot them with no extra code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .._stats import SurgeryStats
from ..data import MultiTaskBatchSampler, MultiTaskCollator, MultiTaskDataset
from ..methods import Method
from ..optim import GradSurgery
from ._stats_log import StatsAverager

try:
    from transformers import Trainer
except ImportError as error:  # pragma: no cover - exercised without transformers installed
    raise ImportError(
        "gradsurg.integrations.hf needs Hugging Face transformers: "
        "pip install transformers accelerate (or gradsurg[hf])"
    ) from error

__all__ = ["GradSurgeryTrainer"]

TaskLosses = Callable[..., Any]
TaskMetrics = Callable[[torch.nn.Module, Any], Mapping[str, float]]


def _losses_from_output(outputs: Any) -> Mapping[str, Tensor]:
    losses = outputs.get("losses") if isinstance(outputs, Mapping) else getattr(outputs, "losses", None)
    if not isinstance(losses, Mapping) or not losses:
        raise ValueError(
            "task_losses: the model output has no 'losses' mapping (task name -> scalar loss); "
            "return one from forward, or pass task_losses=fn(model, inputs) -> dict"
        )
    return losses


def _clear_method_grads(optimizer: Any, args: Any, kwargs: Any) -> None:
    """After each optimizer step: Trainer clears gradients with ``model.zero_grad()``, which
    does not reach a method's own learnable parameters (uncertainty weighting's log-variances)
    — left alone, their gradients would add up over the steps."""
    for p in optimizer.method.parameters():
        p.grad = None


class GradSurgeryTrainer(Trainer):
    """A ``transformers.Trainer`` whose steps are gradient-surgery steps.

    Args:
        surgery: the method (a name or a :class:`gradsurg.Method`), default ``"pcgrad"``.
        surgery_kwargs: keyword options of :class:`~gradsurg.GradSurgery` (``task_weights``,
            ``reduction``, ``nonfinite``, ``shared``, ``data_parallel``, ``tasks``, …). With
            ``train_datasets`` the tasks are declared from its keys, so methods that need the
            number of tasks (``"uw"``, ``"imtl_l"``) can be named.
        task_losses: joint batches: ``fn(model, inputs) -> {task: loss}`` (by default the model
            output's ``losses`` mapping); with ``train_datasets``: ``fn(model, task, inputs) ->
            loss``, required.
        train_datasets: ``{task: dataset}``: task-homogeneous batches (instead of
            ``train_dataset``).
        eval_datasets: ``{task: dataset}`` for :meth:`evaluate`.
        collators: ``{task: fn(examples) -> dict}``, each task's collator (default:
            ``torch.utils.data.default_collate``).
        mixing, temperature: which task each batch comes from (see :mod:`gradsurg.data`);
            ``"round_robin"`` by default.
        task_metrics: ``{task: fn(model, dataset) -> dict}``, evaluated by :meth:`evaluate`.
        args, kwargs: everything ``Trainer`` takes (positional and keyword).

    The accumulation uses ``accumulate="sum"``: Trainer already divides each micro-batch's
    loss by the number of micro-batches in the window, so ``surgery="sum"`` equals a plain
    ``Trainer`` on the same batches; the per-task mean (``surgery_kwargs={"accumulate":
    "mean"}``) would weigh a task by how often it appears in the window instead.
    """

    def __init__(
        self,
        *args: Any,
        surgery: str | Method = "pcgrad",
        surgery_kwargs: Mapping[str, Any] | None = None,
        task_losses: TaskLosses | None = None,
        train_datasets: Mapping[str, Any] | None = None,
        eval_datasets: Mapping[str, Any] | None = None,
        collators: Mapping[str, Callable[[list[Any]], Any]] | None = None,
        mixing: str = "round_robin",
        temperature: float = 2.0,
        task_metrics: Mapping[str, TaskMetrics] | None = None,
        **kwargs: Any,
    ) -> None:
        if task_losses is not None and not callable(task_losses):
            raise TypeError(
                f"task_losses: expected a function (model, inputs) -> dict, got {type(task_losses).__name__}"
            )
        self.surgery = surgery
        self.surgery_kwargs = dict(surgery_kwargs or {})
        self.task_losses = task_losses
        self.last_surgery_stats: SurgeryStats | None = None
        self._surgery_logs = StatsAverager()
        self.task_datasets: MultiTaskDataset | None = None
        self.eval_datasets = dict(eval_datasets or {})
        self.collator = MultiTaskCollator(collators)
        self.task_metrics = dict(task_metrics or {})
        self.mixing, self.temperature = mixing, temperature
        if self.eval_datasets and task_losses is None:
            raise ValueError("task_losses: with eval_datasets, pass task_losses=fn(model, task, inputs) -> loss")
        if train_datasets is not None:
            self._setup_task_datasets(train_datasets, args, kwargs)
        super().__init__(*args, **kwargs)

    def _setup_task_datasets(self, datasets: Mapping[str, Any], args: tuple, kwargs: dict[str, Any]) -> None:
        """Task-homogeneous batches: the mixed dataset, declared tasks, the window length."""
        if kwargs.get("train_dataset") is not None:
            raise ValueError("train_datasets: pass either train_dataset (joint batches) or train_datasets, not both")
        if self.task_losses is None:
            raise ValueError("task_losses: with train_datasets, pass task_losses=fn(model, task, inputs) -> loss")
        self.task_datasets = MultiTaskDataset(datasets)
        # Validated here, where the error is raised before any training starts.
        MultiTaskBatchSampler(self.task_datasets.sizes, 1, mixing=self.mixing, temperature=self.temperature)  # type: ignore[arg-type]
        kwargs["train_dataset"] = self.task_datasets
        self.surgery_kwargs.setdefault("tasks", list(self.task_datasets.tasks))
        training_args = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        num_tasks = len(self.task_datasets.tasks)
        if training_args is not None and num_tasks > 1:
            steps = training_args.gradient_accumulation_steps
            if steps == 1:
                # One task per micro-batch: a window of one micro-batch would be one task's
                # step. Cover the tasks (Trainer reads this when it builds its accelerator).
                training_args.gradient_accumulation_steps = num_tasks
            elif self.mixing == "round_robin" and steps % num_tasks:
                raise ValueError(
                    f"gradient_accumulation_steps: round-robin mixing gives one task per micro-batch; "
                    f"{steps} is not a multiple of the {num_tasks} tasks, so windows would miss tasks"
                )

    # -- optimizer ---------------------------------------------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer (from ``args`` or ``optimizers=``), wrapped in GradSurgery."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if not isinstance(optimizer, GradSurgery):
            scaler = getattr(self.accelerator, "scaler", None)
            surgery = GradSurgery(optimizer, method=self.surgery, scaler=scaler, **self.surgery_kwargs)
            surgery.register_step_post_hook(_clear_method_grads)
            self.optimizer = surgery
        assert self.optimizer is not None
        return self.optimizer

    @property
    def surgery_optimizer(self) -> GradSurgery:
        """The :class:`~gradsurg.GradSurgery` under accelerate's optimizer wrapper."""
        opt = self.optimizer
        while not isinstance(opt, GradSurgery):
            inner = getattr(opt, "optimizer", None)
            if inner is None or inner is opt:
                raise RuntimeError("the optimizer is not a GradSurgery (was create_optimizer overridden?)")
            opt = inner
        return opt

    # -- losses ------------------------------------------------------------------------------

    def task_losses_of(self, model: torch.nn.Module, inputs: Mapping[str, Any]) -> Mapping[str, Tensor]:
        """The per-task losses of one batch (``task_losses`` or the output's ``losses``; for a
        task-homogeneous batch, its task's loss)."""
        if self.task_datasets is not None:
            inputs = dict(inputs)
            task = inputs.pop(self.collator.task_key)
            assert self.task_losses is not None
            return {task: self.task_losses(model, task, inputs)}
        if self.task_losses is not None:
            losses = self.task_losses(model, inputs)
            if not isinstance(losses, Mapping) or not losses:
                raise ValueError("task_losses: expected a non-empty dict task name -> scalar loss")
            return losses
        return _losses_from_output(model(**inputs))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        """The sum of the task losses (what evaluation reports as ``eval_loss``)."""
        if self.task_losses is not None or self.task_datasets is not None:
            losses, outputs = self.task_losses_of(model, inputs), None
        else:
            outputs = model(**inputs)
            losses = _losses_from_output(outputs)
        total = torch.stack([v.reshape(()) for v in losses.values()]).sum()
        return (total, outputs) if return_outputs else total

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
        """One micro-batch: per-task losses → ``GradSurgery.backward`` (the surgery runs on the
        last micro-batch of the accumulation window, on the summed gradients)."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            losses = dict(self.task_losses_of(model, inputs))
        steps = self.current_gradient_accumulation_steps
        losses = {k: v / steps for k, v in losses.items()}
        surgery = self.surgery_optimizer
        scaled = losses if surgery.scaler is None else {k: surgery.scaler.scale(v) for k, v in losses.items()}
        stats = surgery.backward(scaled, sync=bool(self.accelerator.sync_gradients))
        if stats is not None:
            self.last_surgery_stats = stats
            self._surgery_logs.add(stats)
        return torch.stack([v.detach().reshape(()) for v in losses.values()]).sum()

    # -- task-homogeneous data -------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """Joint batches: Trainer's. Task-homogeneous: the datasets mixed by a
        :class:`~gradsurg.data.MultiTaskBatchSampler` that gives every rank the same task at
        each micro-step (so windows line up) and its own examples, each batch collated by its
        task's collator."""
        if self.task_datasets is None:
            return super().get_train_dataloader()
        args = self.args
        sampler = MultiTaskBatchSampler(
            self.task_datasets.sizes,
            args.per_device_train_batch_size,
            mixing=self.mixing,  # type: ignore[arg-type]
            temperature=self.temperature,
            seed=args.data_seed if args.data_seed is not None else args.seed,
            num_replicas=args.world_size,
            rank=args.process_index,
        )
        loader = self.accelerator.prepare(
            DataLoader(self.task_datasets, batch_sampler=sampler, collate_fn=self.collator, num_workers=0)
        )
        # The sampler is rank-aware: accelerate's batch-sampler shard must pass it through.
        shard = getattr(loader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:  # type: ignore[override]
        """Trainer's evaluation, or with ``eval_datasets`` each task's: its mean loss over its
        batches and its ``task_metrics``, as ``{prefix}_{task}_{key}``."""
        if not self.eval_datasets or eval_dataset is not None:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        model = self.model
        assert model is not None and self.task_losses is not None  # checked at construction
        model.eval()
        metrics: dict[str, float] = {}
        size = self.args.per_device_eval_batch_size
        for task, dataset in self.eval_datasets.items():
            items = [(task, dataset[i]) for i in range(len(dataset))]
            total, count = 0.0, 0
            with torch.no_grad():
                for start in range(0, len(items), size):
                    batch = self._prepare_inputs(self.collator(items[start : start + size]))
                    batch.pop(self.collator.task_key)
                    n = len(items[start : start + size])
                    total += float(self.task_losses(model, task, batch)) * n
                    count += n
            metrics[f"{metric_key_prefix}_{task}_loss"] = total / max(count, 1)
            if task in self.task_metrics:
                for key, value in self.task_metrics[task](model, dataset).items():
                    metrics[f"{metric_key_prefix}_{task}_{key}"] = float(value)
        model.train()
        self.log(dict(metrics))  # Trainer.log adds the epoch to the dict it is given
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Trainer's logs, plus the conflict statistics (means since the last training log)."""
        if "loss" in logs:
            logs = {**logs, **self._surgery_logs.pop()}
        super().log(logs, *args, **kwargs)
