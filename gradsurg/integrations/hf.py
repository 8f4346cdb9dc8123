"""Hugging Face ``Trainer`` with gradient surgery: change one class name.

::

    from gradsurg.integrations.hf import GradSurgeryTrainer

    trainer = GradSurgeryTrainer(model=model, args=args, train_dataset=ds, surgery="pcgrad")
    trainer.train()

Per-task losses come from the model output — a ``losses`` mapping (task name → scalar loss) in
the returned dict or ``ModelOutput`` — or from ``task_losses(model, inputs) -> dict``. Trainer's
own machinery keeps working: optimizer and scheduler creation (the optimizer is wrapped in
:class:`~gradsurg.GradSurgery`), ``max_grad_norm``, ``gradient_accumulation_steps`` (one surgery
of the whole accumulated batch, through ``backward(..., sync=False)``), ``fp16`` (accelerate's
GradScaler is handed to gradsurg) and ``bf16``, checkpoints (the method's state is in the
optimizer's state dict) and multi-process launch (DDP through gradsurg's data-parallel
reduce). Every ``logging_steps`` the logs get the conflict statistics averaged over the steps
since the last log (``gradsurg/cos/<a>__<b>``, … see ``gradsurg.integrations._stats_log``),
so ``report_to="tensorboard"`` or ``"wandb"`` plot them with no extra code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .._stats import SurgeryStats
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

TaskLosses = Callable[[torch.nn.Module, Mapping[str, Any]], Mapping[str, Tensor]]


def _losses_from_output(outputs: Any) -> Mapping[str, Tensor]:
    losses = outputs.get("losses") if isinstance(outputs, Mapping) else getattr(outputs, "losses", None)
    if not isinstance(losses, Mapping) or not losses:
        raise ValueError(
            "task_losses: the model output has no 'losses' mapping (task name -> scalar loss); "
            "return one from forward, or pass task_losses=fn(model, inputs) -> dict"
        )
    return losses


class GradSurgeryTrainer(Trainer):
    """A ``transformers.Trainer`` whose steps are gradient-surgery steps.

    Args:
        surgery: the method (a name or a :class:`gradsurg.Method`), default ``"pcgrad"``.
        surgery_kwargs: keyword options of :class:`~gradsurg.GradSurgery` (``task_weights``,
            ``reduction``, ``nonfinite``, ``shared``, ``data_parallel``, …).
        task_losses: ``fn(model, inputs) -> {task: loss}``; by default the model output's
            ``losses`` mapping.
        *args, **kwargs: everything ``Trainer`` takes.
    """

    def __init__(
        self,
        *args: Any,
        surgery: str | Method = "pcgrad",
        surgery_kwargs: Mapping[str, Any] | None = None,
        task_losses: TaskLosses | None = None,
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
        super().__init__(*args, **kwargs)

    # -- optimizer ---------------------------------------------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer (from ``args`` or ``optimizers=``), wrapped in GradSurgery."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if not isinstance(optimizer, GradSurgery):
            scaler = getattr(self.accelerator, "scaler", None)
            self.optimizer = GradSurgery(optimizer, method=self.surgery, scaler=scaler, **self.surgery_kwargs)
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
        """The per-task losses of one batch (``task_losses`` or the output's ``losses``)."""
        if self.task_losses is not None:
            losses = self.task_losses(model, inputs)
            if not isinstance(losses, Mapping) or not losses:
                raise ValueError("task_losses: expected a non-empty dict task name -> scalar loss")
            return losses
        return _losses_from_output(model(**inputs))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        """The sum of the task losses (what evaluation reports as ``eval_loss``)."""
        if self.task_losses is not None:
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

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Trainer's logs, plus the conflict statistics (means since the last training log)."""
        if "loss" in logs:
            logs = {**logs, **self._surgery_logs.pop()}
        super().log(logs, *args, **kwargs)
