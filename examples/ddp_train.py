"""Multi-task training with gradient surgery on several processes (DDP or FSDP2), checked against
one process on the same global batch.

    torchrun --nproc_per_node 2 examples/ddp_train.py                  # DDP, CPU/gloo
    torchrun --nproc_per_node 2 examples/ddp_train.py --fsdp           # FSDP2 (fully_shard)
    torchrun --nproc_per_node 2 examples/ddp_train.py --method mgda --data-parallel local

Each rank trains on its shard of every global batch; gradsurg averages each task's gradient over
the ranks before the surgery (``data_parallel="exact"``, the default), so every rank applies the
update one process would compute on the whole batch. Rank 0 then replays the run in a single
process and prints the largest parameter difference. NCCL is used when CUDA is available, gloo
otherwise.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

from gradsurg import GradSurgery, available_methods


class SharedTrunk(torch.nn.Module):
    """A shared trunk and one regression head per task; ``forward`` returns the task losses."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(64, 1) for _ in range(num_tasks))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {f"task{t}": ((head(h).squeeze(-1) - y[:, t]) ** 2).mean() for t, head in enumerate(self.heads)}


def global_batch(step: int, size: int, num_tasks: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's whole batch, the same on every rank (each rank then takes its shard)."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(size, 16, generator=gen)
    # Alternating signs make the tasks' gradients conflict.
    y = torch.randn(size, num_tasks, generator=gen) * torch.tensor([(-1.0) ** t for t in range(num_tasks)])
    return x.to(device), y.to(device)


def train(args: argparse.Namespace, device: torch.device, rank: int, world: int) -> list[torch.Tensor]:
    """``args.steps`` steps on this rank's shard; the final parameters (gathered if sharded)."""
    torch.manual_seed(args.seed)
    model = SharedTrunk(args.tasks).to(device)
    if world > 1 and args.fsdp:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model.trunk)
        wrapped = fully_shard(model)
    elif world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        wrapped = model
    opt = GradSurgery(
        torch.optim.AdamW(wrapped.parameters(), lr=args.lr),
        method=args.method,
        # The one-process replay runs on rank 0 while the process group is up: no exchange.
        data_parallel=args.data_parallel if world > 1 else "none",
    )
    per_rank = args.batch_size // world
    for step in range(args.steps):
        x, y = global_batch(step, args.batch_size, args.tasks, device)
        shard = slice(rank * per_rank, (rank + 1) * per_rank)
        opt.zero_grad()
        stats = opt.backward(wrapped(x[shard], y[shard]))
        opt.step()
        if rank == 0 and (step + 1) % max(1, args.steps // 5) == 0:
            losses = ", ".join(f"{k} {v:.4f}" for k, v in stats.as_dict()["losses"].items())
            print(f"[world {world}] step {step + 1}: {losses}, conflicts {stats.num_conflicts}", flush=True)
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu() for p in model.parameters()]


def main(argv: list[str] | None = None) -> float | None:
    """Train on every rank; on rank 0 compare with one process. Returns that difference."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="pcgrad", choices=available_methods())
    parser.add_argument("--data-parallel", default="exact", choices=["exact", "local"])
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 instead of DDP")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch (split over the ranks)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.method in ("uw", "gradnorm"):
        parser.error(f"--method: {args.method} needs options this example does not pass; pick another")

    launched = "RANK" in os.environ
    if launched:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.batch_size % world:
            parser.error(f"--batch-size: {args.batch_size} does not split over {world} ranks")
        device = (
            torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if backend == "nccl" else torch.device("cpu")
        )
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        rank, world, device = 0, 1, torch.device("cpu")
    try:
        final = train(args, device, rank, world)
        if rank != 0:
            return None
        reference = train(args, device, 0, 1)
        diff = max(float((a - b).abs().max()) for a, b in zip(final, reference))
        label = "exact" if args.data_parallel == "exact" else "local (an approximation)"
        print(f"{world} process(es), {label}: max |parameter difference| vs one process = {diff:.3e}", flush=True)
        return diff
    finally:
        if launched:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
