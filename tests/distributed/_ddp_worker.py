"""What each spawned rank runs (importable by name, as torch.multiprocessing.spawn needs)."""

from __future__ import annotations

import contextlib
import os
import traceback

import torch
import torch.distributed as dist

import gradsurg
from gradsurg import GradSurgery

NUM_TASKS = 3
STEPS = 3
GLOBAL_BATCH = 8


class ThreeHeads(torch.nn.Module):
    """A shared trunk, one head per task, and an ``extra`` head only task 0 reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 10))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(10, 1) for _ in range(NUM_TASKS))
        self.extra = torch.nn.Linear(10, 1)
        self.unused = torch.nn.Linear(10, 1)  # reached by no task (find_unused_parameters=True)

    def forward(self, x, y):
        h = self.trunk(x)
        losses = [((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)]
        losses[0] = losses[0] + 0.1 * self.extra(h).pow(2).mean()
        return tuple(losses)


def make_model() -> ThreeHeads:
    torch.manual_seed(0)
    return ThreeHeads()


def data(step: int, micro: int = 0):
    """The global batch of a step (and micro-batch): x, y."""
    gen = torch.Generator().manual_seed(1000 * step + micro)
    x = torch.randn(GLOBAL_BATCH, 6, generator=gen)
    y = torch.randn(GLOBAL_BATCH, NUM_TASKS, generator=gen) * torch.tensor([1.0, -1.0, 1.0])
    return x, y


def make_method(name: str):
    if name == "uw":
        return gradsurg.get_method("uw", num_tasks=NUM_TASKS)
    return name


def _full(p: torch.Tensor) -> torch.Tensor:
    """The whole parameter (FSDP2 shards are gathered)."""
    full = p.full_tensor() if hasattr(p, "full_tensor") else p
    return full.detach().clone()


def window_losses(model, rank: int, world: int, step: int, patterns: dict) -> list[tuple[dict, bool]]:
    """Task-keyed micro-batches of one step on one rank: micro-batch m holds the tasks
    ``patterns[rank][m]`` (indices), on this rank's shard of the data; (losses, is last)."""
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    out = []
    pattern = patterns[rank]
    for micro, tasks in enumerate(pattern):
        x, y = data(step, micro)
        losses = model(x[shard], y[shard])
        out.append(({f"t{t}": losses[t] for t in tasks}, micro == len(pattern) - 1))
    return out


def run_windows(model, opt, rank, world, patterns):
    """STEPS steps of task-keyed windows; the parameters after every step and the stats."""
    snapshots, seen = [], []
    for step in range(STEPS):
        opt.zero_grad()
        for losses, last in window_losses(model, rank, world, step, patterns):
            stats = opt.backward(losses, sync=last)
        seen.append((stats.task_names, stats.task_micro_batches))
        opt.step()
        snapshots.append([_full(p) for p in model.parameters()])
    return snapshots, seen


def run_case(model, opt, rank, world, *, micro_batches=1, nan_rank=None, nonfinite_step=None):
    """STEPS steps on this rank's shard; returns the parameters after every step and outcomes."""
    snapshots, outcomes = [], []
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    for step in range(STEPS):
        opt.zero_grad()
        outcome = "ok"
        try:
            for micro in range(micro_batches):
                x, y = data(step, micro)
                last = micro == micro_batches - 1
                # DDP's no_sync for all but the last micro-batch, as in an ordinary DDP loop.
                quiet = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
                with quiet:
                    losses = list(model(x[shard], y[shard]))
                losses = [loss / micro_batches for loss in losses]
                if step == nonfinite_step and rank == nan_rank:
                    losses[1] = losses[1] * float("nan")
                stats = opt.backward(losses, sync=last)
            if stats.skipped:
                outcome = "skipped"
            opt.step()
        except FloatingPointError:
            outcome = "raised"
        outcomes.append(outcome)
        snapshots.append([_full(p) for p in model.parameters()])
    return snapshots, outcomes


def worker(rank: int, world: int, port: int, out_dir: str, cases: list[dict]) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        for case in cases:
            model = make_model()
            if case.get("fsdp"):
                from torch.distributed.fsdp import fully_shard

                fully_shard(model.trunk)
                ddp = fully_shard(model)
            else:
                ddp = torch.nn.parallel.DistributedDataParallel(
                    model, find_unused_parameters=case.get("find_unused", False)
                )
            opt = GradSurgery(
                torch.optim.SGD(ddp.parameters(), lr=0.1),
                method=make_method(case["method"]),
                data_parallel=case.get("mode", "exact"),
                nonfinite=case.get("nonfinite", "raise"),
                batch_tasks=case.get("batch_tasks", False),
                tasks=case.get("tasks"),
            )
            expected = "ShardedReduce" if case.get("fsdp") else "DataParallel"
            assert type(opt._engine.reducer).__name__ == expected, type(opt._engine.reducer).__name__
            try:
                if case.get("patterns") is not None:
                    results[case["id"]] = run_windows(ddp, opt, rank, world, case["patterns"])
                    continue
                results[case["id"]] = run_case(
                    ddp,
                    opt,
                    rank,
                    world,
                    micro_batches=case.get("micro_batches", 1),
                    nan_rank=case.get("nan_rank"),
                    nonfinite_step=case.get("nonfinite_step"),
                )
            except Exception:  # recorded for the parent, which fails the test with it
                results[case["id"]] = traceback.format_exc()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
