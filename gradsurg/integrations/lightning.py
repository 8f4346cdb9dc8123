"""Lightning with gradient surgery: a ``LightningModule`` base with manual optimisation.

::

    from gradsurg.integrations.lightning import GradSurgeryModule

    class MultiTask(GradSurgeryModule):
        def task_losses(self, batch, batch_idx):
            return {"cls": ..., "sum": ...}

        def configure_optimizers(self):
            return GradSurgery(torch.optim.AdamW(self.parameters(), lr=1e-4), method="upgrad")

    lightning.Trainer(max_steps=1000, precision="bf16-mixed").fit(MultiTask(), loader)

Each training batch runs ``GradSurgery.backward`` on the task losses; with
``accumulate_grad_batches=k`` (an argument of the module: Lightning's own accumulation is for
automatic optimisation) k batches make one surgery of their summed gradients and one optimizer
step. ``gradient_clip_val`` (module argument) clips before the step. ``precision="16-mixed"``
hands Lightning's GradScaler to gradsurg; ``"bf16-mixed"`` needs none. The conflict statistics
are logged with ``self.log_dict`` under the names of :func:`gradsurg.integrations.stats_scalars`
(``gradsurg/cos/<a>__<b>``, …), so any Lightning logger plots them. Multi-process strategies
(``"ddp"``) work through gradsurg's data-parallel reduce. LR schedulers are yours to step
(``self.lr_schedulers()``), as always with manual optimisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .._stats import SurgeryStats
from ..optim import GradSurgery
from ._stats_log import stats_scalars

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - exercised without lightning installed
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as error:
        raise ImportError(
            "gradsurg.integrations.lightning needs Lightning: pip install lightning (or gradsurg[lightning])"
        ) from error

__all__ = ["GradSurgeryModule"]


class GradSurgeryModule(pl.LightningModule):
    """A ``LightningModule`` whose training steps are gradient-surgery steps.

    Subclasses implement :meth:`task_losses` and return a :class:`~gradsurg.GradSurgery` from
    ``configure_optimizers``.

    Args:
        accumulate_grad_batches: batches per optimizer step (one surgery of their summed
            per-task gradients).
        gradient_clip_val: clip the combined gradient's norm to this before each step (0: off).
    """

    def __init__(self, *, accumulate_grad_batches: int = 1, gradient_clip_val: float = 0.0) -> None:
        super().__init__()
        if (
            isinstance(accumulate_grad_batches, bool)
            or not isinstance(accumulate_grad_batches, int)
            or accumulate_grad_batches < 1
        ):
            raise ValueError(f"accumulate_grad_batches: expected an int ≥ 1, got {accumulate_grad_batches!r}")
        if not gradient_clip_val >= 0:
            raise ValueError(f"gradient_clip_val: expected a number ≥ 0, got {gradient_clip_val!r}")
        self.automatic_optimization = False
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = float(gradient_clip_val)
        self.last_surgery_stats: SurgeryStats | None = None
        self._micro = 0

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Clip the combined gradient (Lightning calls this after a GradScaler's unscale)."""
        if self.gradient_clip_val > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.gradient_clip_val)

    def task_losses(self, batch: Any, batch_idx: int) -> Mapping[str, Tensor]:
        """The per-task losses of one batch (task name → scalar loss)."""
        raise NotImplementedError("GradSurgeryModule subclasses implement task_losses(batch, batch_idx)")

    def surgery_optimizer(self) -> GradSurgery:
        """The :class:`~gradsurg.GradSurgery` that ``configure_optimizers`` returned."""
        opt = self.optimizers()
        inner = getattr(opt, "optimizer", opt)
        if not isinstance(inner, GradSurgery):
            raise TypeError(
                f"configure_optimizers: expected a gradsurg.GradSurgery, got {type(inner).__name__}; "
                "wrap the optimizer: GradSurgery(torch.optim.AdamW(...), method=...)"
            )
        return inner

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Per-task losses → surgery (every ``accumulate_grad_batches`` batches) → step → log."""
        losses = dict(self.task_losses(batch, batch_idx))
        return self.surgery_step(losses)

    def surgery_step(self, losses: Mapping[str, Tensor]) -> Tensor:
        """One batch's part of a surgery step; returns the (detached) sum of the losses."""
        surgery = self.surgery_optimizer()
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and surgery.scaler is not scaler:
            surgery.scaler = scaler  # Lightning's 16-mixed GradScaler scales what we backward
        k = self.accumulate_grad_batches
        self._micro += 1
        sync = self._micro % k == 0 or bool(getattr(self.trainer, "is_last_batch", False))
        losses = {name: value / k for name, value in losses.items()}
        scaled = losses if surgery.scaler is None else {n: surgery.scaler.scale(v) for n, v in losses.items()}
        stats = surgery.backward(scaled, sync=sync)
        if stats is not None:
            self._micro = 0
            opt = self.optimizers()
            assert not isinstance(opt, list)  # surgery_optimizer() checked there is one
            opt.step()  # (clipping, if any, in on_before_optimizer_step: after AMP's unscale)
            opt.zero_grad()
            self.last_surgery_stats = stats
            if not stats.skipped:
                self.log_dict(stats_scalars(stats), on_step=True, on_epoch=False)
        return torch.stack([v.detach().reshape(()) for v in losses.values()]).sum()
