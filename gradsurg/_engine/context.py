"""What the engine hands a step path: everything a path reads, passed down explicitly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._buffer import SharedBuffers
from ..kernels import get_backend
from .accumulate import AccumulationWindow
from .batching import TaskBatching
from .reduce import LocalReduce

if TYPE_CHECKING:
    from .._options import Options
    from ..kernels.protocol import Backend

__all__ = ["BufferCache", "StepContext"]


class BufferCache:
    """The reused J buffers: one :class:`~gradsurg._buffer.SharedBuffers` kept while the shared
    parameters, T and ``j_dtype`` stay the same."""

    def __init__(self, j_dtype: torch.dtype | None) -> None:
        self.j_dtype = j_dtype
        self.current: SharedBuffers | None = None

    def acquire(self, shared: list[Tensor], num_tasks: int) -> SharedBuffers | None:
        """The buffers for these shared parameters and T (None without any)."""
        if not shared:
            return None
        key = SharedBuffers.make_key(shared, num_tasks, self.j_dtype)
        if self.current is None or self.current.key != key:
            self.current = SharedBuffers(shared, num_tasks, self.j_dtype)
        return self.current


@dataclass
class StepContext:
    """One step's inputs besides the plan.

    Attributes:
        options: the validated options (method, reduction, non-finite policy, scaler, …).
        reducer: the reduce stage (one process, DDP or FSDP2).
        window: the accumulation window (``sync=False`` micro-batches).
        buffers: the reused J buffers.
        batching: how the capture asks autograd for the per-task gradients.
        add_parameters: gives learnable method parameters created in this step to the caller's
            optimizer (None: they only get their ``.grad``).
        window_names: at the syncing call of an accumulation window, the tasks of the whole
            window (agreed by every rank, in the engine's order); None otherwise.
    """

    options: Options
    reducer: LocalReduce
    window: AccumulationWindow
    buffers: BufferCache
    batching: TaskBatching
    add_parameters: Callable[[Sequence[Tensor]], None] | None = None
    window_names: tuple[str, ...] | None = None

    def kernels(self, device: torch.device) -> Backend:
        """The kernel backend for ``device``."""
        return get_backend(self.options.backend, device)
