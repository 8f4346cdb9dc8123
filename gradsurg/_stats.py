"""What one surgery step saw: the Gram matrix, cosines, norms, weights and what was decided."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SurgeryStats", "cosine_from_gram", "make_stats"]


def cosine_from_gram(gram: Tensor) -> Tensor:
    """Cosine-similarity matrix from a Gram matrix.

    A zero gradient has cosine 0 with everything, itself included (rather than NaN), so that
    logging and conflict counts stay finite when a task contributes nothing.
    """
    norms = gram.diagonal().clamp(min=0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, gram / safe, torch.zeros_like(gram)).clamp(-1.0, 1.0)


@dataclass(frozen=True)
class SurgeryStats:
    """The record of one :meth:`GradSurgery.backward` call (all tensors float64 on the CPU).

    Attributes:
        task_names: the keys of the losses dict, or ``"0"``, ``"1"``, … for a list.
        losses: ``(T,)`` detached loss values (before ``task_weights``).
        gram: ``(T, T)`` Gram matrix of the task gradients of the shared parameters
            (scaled by ``task_weights``); None when no Gram was computed: loss-space methods
            compute no per-task gradients, and a step without shared parameters (one task, or
            tasks that share nothing) has none to compare.
        weights: ``(T,)`` weights applied to the rows of J (after ``reduction``), or to the
            losses for loss-space methods; NaN for methods that combine elementwise (GradDrop);
            ``1`` (or ``1/T`` with ``reduction="mean"``) when there were no shared parameters,
            since each task's gradient was then applied as it is; zeros when the step was
            skipped.
        method: name of the method.
        backend: kernel backend that ran the step.
        skipped: whether the step was skipped because of non-finite gradients: with
            ``nonfinite="skip"`` the next ``step()`` is a no-op; under a GradScaler, ``.grad``
            holds the plain gradient with its infs and ``scaler.step`` skips the step.
        nonfinite_tasks: names of the tasks whose gradients had NaN or inf.
        micro_batches: how many ``backward`` calls the step accumulated (``sync=False`` calls
            plus the syncing one); ``losses`` are summed over them.
        refreshed: with ``refresh_every=k``, whether this step computed the per-task gradients,
            the Gram matrix and fresh weights (True), or reused the last refresh's weights in
            one backward (False: ``gram`` is None). Always True otherwise.
        group_weights: with ``groups=``, the ``(G, T)`` weights of each group (``weights`` is
            then NaN); None otherwise.
        group_grams: with ``groups=``, the ``(G, T, T)`` Gram matrix of each group; None
            otherwise.
        task_micro_batches: per task, how many micro-batches of the step it came from (an
            accumulation window whose micro-batches hold different tasks); all equal to
            ``micro_batches`` otherwise.
        tasks_per_backward: the most tasks one autograd call took for the per-task gradients
            (``batch_tasks=``); 1 is one backward pass per task, also after a model fell back
            from batching. 1 for paths without per-task gradients.
    """

    task_names: tuple[str, ...]
    losses: Tensor
    gram: Tensor | None
    weights: Tensor
    method: str
    backend: str
    skipped: bool = False
    nonfinite_tasks: tuple[str, ...] = ()
    micro_batches: int = 1
    refreshed: bool = True
    group_weights: Tensor | None = None
    task_micro_batches: tuple[int, ...] = ()
    group_grams: Tensor | None = None
    tasks_per_backward: int = 1

    @property
    def norms(self) -> Tensor | None:
        """``(T,)`` norms of the task gradients of the shared parameters (None without a Gram)."""
        return None if self.gram is None else self.gram.diagonal().clamp(min=0.0).sqrt()

    @property
    def cosine(self) -> Tensor | None:
        """``(T, T)`` cosine similarities, 0 where a gradient is zero (None without a Gram)."""
        return None if self.gram is None else cosine_from_gram(self.gram)

    @property
    def num_conflicts(self) -> int | None:
        """Task pairs ``i < j`` whose gradients conflict (negative inner product; None without a Gram)."""
        return None if self.gram is None else int((self.gram.triu(diagonal=1) < 0).sum())

    def as_dict(self) -> dict[str, object]:
        """Plain Python values for loggers (lists of floats, keyed by task name)."""
        norms, cosine = self.norms, self.cosine
        return {
            "losses": dict(zip(self.task_names, self.losses.tolist())),
            "weights": dict(zip(self.task_names, self.weights.tolist())),
            "norms": None if norms is None else dict(zip(self.task_names, norms.tolist())),
            "cosine": None if cosine is None else cosine.tolist(),
            "num_conflicts": self.num_conflicts,
            "method": self.method,
            "backend": self.backend,
            "skipped": self.skipped,
        }


def make_stats(
    names: list[str] | tuple[str, ...],
    losses: Tensor,
    gram: Tensor | None,
    weights: Tensor | None,
    *,
    method: str,
    backend: str,
    nonfinite_tasks: tuple[str, ...] = (),
    micro_batches: int = 1,
    tasks_per_backward: int = 1,
    group_weights: Tensor | None = None,
    task_micro_batches: tuple[int, ...] | None = None,
    group_grams: Tensor | None = None,
) -> SurgeryStats:
    """The one builder of :class:`SurgeryStats`: a step that names non-finite tasks was skipped
    (weights zero); ``weights=None`` means the method has no weights (NaN)."""
    num_tasks = len(names)
    skipped = bool(nonfinite_tasks)
    if skipped:
        weights = torch.zeros(num_tasks, dtype=torch.float64)
    elif weights is None:
        weights = torch.full((num_tasks,), float("nan"), dtype=torch.float64)
    return SurgeryStats(
        task_names=tuple(names),
        losses=losses,
        gram=None if gram is None else gram.detach().to(device="cpu", dtype=torch.float64),
        weights=weights.detach().to(device="cpu", dtype=torch.float64),
        method=method,
        backend=backend,
        skipped=skipped,
        nonfinite_tasks=tuple(nonfinite_tasks),
        micro_batches=micro_batches,
        tasks_per_backward=tasks_per_backward,
        group_weights=None if skipped else group_weights,
        task_micro_batches=(micro_batches,) * num_tasks if task_micro_batches is None else task_micro_batches,
        group_grams=None if skipped or group_grams is None else group_grams.detach().to("cpu", torch.float64),
    )
