"""Multi-task data: task-homogeneous batches from several datasets.

When each task's data has its own format — token labels for a language-model head, a class per
row for a classifier — each batch comes from one task, with that task's collator, and gradient
accumulation gathers the tasks into one surgery (``backward(..., sync=False)`` per
micro-batch). :class:`MultiTaskBatchSampler` decides which task each batch comes from:

- ``"round_robin"``: the tasks in turn (the "alternating batches" of the multi-task fine-tuning
  literature); an epoch is as long as the largest task makes it, smaller tasks start over with
  a new shuffle when exhausted, so every window of T consecutive batches holds every task;
- ``"proportional"``: each task's batches once per epoch, in a random order, so a task's share
  of the batches is its share of the examples;
- ``"temperature"``: the task of each batch drawn with probability ∝ n_t^(1/τ) (the
  temperature-scaled mixing of T5 and mT5, Raffel et al. 2020, Xue et al. 2021): τ = 1 is
  proportional, τ → ∞ uniform.

Everything is a function of ``seed`` and the epoch, so the order is reproducible and resumable
(:meth:`MultiTaskBatchSampler.state_dict`). Under several processes every rank is given the same
task at the same micro-step — so accumulation windows line up across ranks — and its own
``batch_size`` examples of that task's batch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["MIXINGS", "Mixing", "MultiTaskBatchSampler", "MultiTaskCollator", "MultiTaskDataset"]

Mixing = Literal["round_robin", "proportional", "temperature"]
#: Accepted values of ``mixing=``.
MIXINGS: tuple[str, ...] = get_args(Mixing)


class MultiTaskDataset(Dataset):
    """Several datasets as one: index i is ``(task, example)``, the datasets one after the other
    in the order of ``datasets``.

    Args:
        datasets: task name → a map-style dataset (``len`` and integer indexing).
    """

    def __init__(self, datasets: Mapping[str, Any]) -> None:
        if not isinstance(datasets, Mapping) or not datasets:
            raise ValueError("datasets: expected a non-empty mapping task name -> dataset")
        self.tasks = [str(t) for t in datasets]
        self.datasets = list(datasets.values())
        sizes = []
        for task, ds in zip(self.tasks, self.datasets):
            try:
                sizes.append(len(ds))
            except TypeError:
                raise TypeError(f"datasets[{task!r}]: expected a map-style dataset with len()") from None
            if sizes[-1] == 0:
                raise ValueError(f"datasets[{task!r}]: is empty")
        self.sizes = dict(zip(self.tasks, sizes))
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[str, int]:
        """(task, index in its dataset) of global index ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        k = bisect.bisect_right(self.offsets, index) - 1
        return self.tasks[k], index - self.offsets[k]

    def __getitem__(self, index: int) -> tuple[str, Any]:
        task, local = self.locate(index)
        return task, self.datasets[self.tasks.index(task)][local]


class MultiTaskCollator:
    """Collate a task-homogeneous batch with its task's collator and name the task.

    Args:
        collators: task name → ``fn(list of examples) -> dict``; a task without one gets
            ``default``.
        default: the collator of the other tasks (``torch.utils.data.default_collate``).
        task_key: the key under which the batch names its task.
    """

    def __init__(
        self,
        collators: Mapping[str, Callable[[list[Any]], Any]] | None = None,
        default: Callable[[list[Any]], Any] | None = None,
        task_key: str = "task",
    ) -> None:
        from torch.utils.data import default_collate

        self.collators = dict(collators or {})
        self.default = default or default_collate
        self.task_key = task_key

    def __call__(self, items: list[tuple[str, Any]]) -> dict[str, Any]:
        tasks = {task for task, _ in items}
        if len(tasks) != 1:
            raise ValueError(f"batch: a task-homogeneous batch holds one task, got {sorted(tasks)}")
        task = items[0][0]
        batch = self.collators.get(task, self.default)([example for _, example in items])
        if not isinstance(batch, Mapping):
            raise TypeError(f"collators[{task!r}]: expected a dict batch, got {type(batch).__name__}")
        return {**batch, self.task_key: task}


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches of global indices of a :class:`MultiTaskDataset`, each from one task.

    Args:
        sizes: task name → number of examples (``MultiTaskDataset.sizes``), in the dataset's
            order.
        batch_size: examples per batch and rank (an int, or a mapping task → int).
        mixing: which task each batch comes from (see the module docstring).
        temperature: τ of ``mixing="temperature"`` (> 0).
        seed: the seed of every shuffle and draw.
        num_replicas, rank: the data-parallel processes: every rank gets the same task at the
            same step, and its own slice of that task's batch.
        drop_last: drop a task's last incomplete batch (``"proportional"``); the other mixings
            always take full batches, cycling through the task's examples.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        batch_size: int | Mapping[str, int],
        *,
        mixing: Mixing = "round_robin",
        temperature: float = 2.0,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(sizes, Mapping) or not sizes or any(int(n) < 1 for n in sizes.values()):
            raise ValueError(f"sizes: expected a non-empty mapping task -> number of examples ≥ 1, got {sizes!r}")
        if mixing not in MIXINGS:
            raise ValueError(f"mixing: expected one of {MIXINGS}, got {mixing!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
        if not (isinstance(num_replicas, int) and num_replicas >= 1 and isinstance(rank, int) and 0 <= rank < num_replicas):
            raise ValueError(f"rank: expected 0 ≤ rank < num_replicas, got rank={rank!r}, num_replicas={num_replicas!r}")
        self.tasks = [str(t) for t in sizes]
        self.sizes = [int(n) for n in sizes.values()]
        per_task = batch_size if isinstance(batch_size, Mapping) else dict.fromkeys(self.tasks, batch_size)
        self.batch_sizes = []
        for task in self.tasks:
            b = per_task.get(task)
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise ValueError(f"batch_size: expected an int ≥ 1 for task {task!r}, got {b!r}")
            self.batch_sizes.append(b)
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.mixing = mixing
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._start = 0  # batches of the current epoch already yielded (resume)

    # -- the schedule --------------------------------------------------------------------

    def _global(self, k: int) -> int:
        """Examples one batch of task k takes over all ranks."""
        return self.batch_sizes[k] * self.num_replicas

    def _counts(self) -> list[int]:
        """Batches per task in one pass over its examples."""
        if self.drop_last:
            return [max(1, n // self._global(k)) for k, n in enumerate(self.sizes)]
        return [math.ceil(n / self._global(k)) for k, n in enumerate(self.sizes)]

    def task_schedule(self) -> list[int]:
        """The task (index into ``tasks``) of every batch of the current epoch."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        counts = self._counts()
        if self.mixing == "round_robin":
            return [k for _ in range(max(counts)) for k in range(len(self.tasks))]
        if self.mixing == "proportional":
            order = [k for k, c in enumerate(counts) for _ in range(c)]
            return [order[i] for i in torch.randperm(len(order), generator=gen).tolist()]
        weights = torch.tensor([n ** (1.0 / self.temperature) for n in self.sizes], dtype=torch.float64)
        return torch.multinomial(weights / weights.sum(), sum(counts), replacement=True, generator=gen).tolist()

    def _examples(self, k: int) -> Iterator[int]:
        """Task k's examples (global indices) in shuffled passes, a new shuffle per pass."""
        rounds = 0
        while True:
            gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_007 + k) * 101 + rounds)
            for i in torch.randperm(self.sizes[k], generator=gen).tolist():
                yield self.offsets[k] + i
            rounds += 1

    def _epoch_batches(self) -> Iterator[list[int]]:
        streams = [self._examples(k) for k in range(len(self.tasks))]
        taken = [0] * len(self.tasks)
        for k in self.task_schedule():
            size = self._global(k)
            if self.mixing == "proportional":
                # One pass: the last batch of a task may be short (drop_last: dropped above).
                size = min(size, self.sizes[k] - taken[k]) if not self.drop_last else size
            batch = [next(streams[k]) for _ in range(size)]
            taken[k] += size
            # Rank r's share: a contiguous slice, so each rank sees different examples.
            share = math.ceil(len(batch) / self.num_replicas)
            yield batch[self.rank * share : (self.rank + 1) * share] or batch[:1]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        for i, batch in enumerate(self._epoch_batches()):
            if i >= start:
                yield batch

    def __len__(self) -> int:
        return len(self.task_schedule())

    # -- epochs and checkpoints ----------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (as ``DistributedSampler.set_epoch``): a new order."""
        self.epoch = int(epoch)

    def state_dict(self, batches_seen: int = 0) -> dict[str, int]:
        """Where the sampler stands: the epoch and how many of its batches were consumed."""
        return {"epoch": self.epoch, "batches_seen": int(batches_seen), "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume where :meth:`state_dict` was taken: the next ``__iter__`` starts after the
        batches already seen in that epoch."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"state: saved with seed {state.get('seed')}, this sampler has seed {self.seed}")
        self.epoch = int(state["epoch"])
        self._start = int(state.get("batches_seen", 0))

    def task_of(self, batch: Sequence[int]) -> str:
        """The task of a batch of global indices."""
        return self.tasks[bisect.bisect_right(self.offsets, batch[0]) - 1]
