"""The one collective the engine and the FSDP2 shard handling both need (a leaf module, so that
neither imports the other)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["mean_over_ranks_"]


def mean_over_ranks_(tensors: Sequence[Tensor], group: Any) -> None:
    """Average ``tensors`` over the ranks of ``group``, in place: one flat all-reduce per
    (device, dtype)."""
    import torch.distributed as dist

    world_size = dist.get_world_size(group)
    by_layout: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        by_layout.setdefault((t.device, t.dtype), []).append(t)
    for members in by_layout.values():
        flat = torch.cat([t.reshape(-1) for t in members])
        dist.all_reduce(flat, group=group)
        flat.div_(world_size)
        offset = 0
        for t in members:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
