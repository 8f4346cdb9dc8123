"""FSDP2 (``torch.distributed.fsdp.fully_shard``): per-task gradients of sharded parameters.

Under FSDP2 the optimizer holds *sharded* parameters (DTensors, one dim-0 shard per rank), while
the forward pass runs on *unsharded* parameters that FSDP all-gathers and that are what a loss's
autograd graph reaches. gradsurg therefore differentiates each task's loss with respect to the
unsharded parameters, averages that full gradient over the ranks and keeps this rank's dim-0
shard — FSDP's own reduce-scatter, one task at a time — so row t of the local J holds this rank's
shard of task t's global gradient. The Gram matrix is the all-reduced sum of the ranks' partial
Grams (T×T numbers), every rank computes the same weights, and each rank writes wᵀ·J into its
own shard's ``.grad``.

This reads FSDP2's parameter records (``FSDPParam``: ``sharded_param``, ``unsharded_param``),
which torch does not document as public; :func:`fsdp_handles` checks for them and says so if a
torch version lacks them. The shards are reduced with an all-reduce (gloo has no
reduce-scatter), 2× the traffic of FSDP's reduce-scatter.
"""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._collectives import mean_over_ranks_

__all__ = ["FSDPHandle", "Sharding", "fsdp_handles", "is_dtensor", "local_view", "wrap_grad"]


def is_dtensor(t: Tensor) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (FSDP2 shards are)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(t, DTensor)


def local_view(t: Tensor) -> Tensor:
    """This rank's local tensor of a DTensor (sharing its storage); ``t`` itself otherwise."""
    return t.to_local() if is_dtensor(t) else t  # type: ignore[attr-defined]


def wrap_grad(param: Tensor, local: Tensor) -> Tensor:
    """``local`` as the gradient of ``param``: a DTensor with ``param``'s sharding when
    ``param`` is one (sharing ``local``'s storage), ``local`` itself otherwise."""
    if not is_dtensor(param):
        return local
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local,
        param.device_mesh,  # type: ignore[attr-defined]
        param.placements,  # type: ignore[attr-defined]
        run_check=False,
        shape=param.shape,
        stride=param.stride(),  # type: ignore[attr-defined]
    )


class FSDPHandle:
    """One FSDP2 parameter: what autograd differentiates, and how its gradient becomes the
    local shard's gradient."""

    def __init__(self, fsdp_param: Any) -> None:
        self._fsdp_param = fsdp_param
        self.sharded: Tensor = fsdp_param.sharded_param

    @property
    def target(self) -> Tensor:
        """The unsharded parameter the forward pass used (what a loss's graph reaches)."""
        return self._fsdp_param.unsharded_param

    def local_shard(self, full: Tensor, rank: int, world_size: int) -> Tensor:
        """This rank's dim-0 shard of an (already averaged) full-size gradient."""
        chunks = torch.chunk(full, world_size, dim=0)
        if rank < len(chunks):
            return chunks[rank]
        return full.new_empty((0, *full.shape[1:]))


class Sharding:
    """The FSDP2 parameters of a step and the process group their shards are spread over."""

    def __init__(self, handles: dict[int, FSDPHandle], group: Any = None) -> None:
        import torch.distributed as dist

        self.handles = handles
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def target(self, param: Tensor) -> Tensor:
        """What autograd differentiates for ``param``: its unsharded parameter."""
        return self.handles[id(param)].target

    def localize(self, params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Full-size gradients of ``params``' unsharded parameters → this rank's shards of
        their mean over the ranks (one flat all-reduce)."""
        # autograd.grad's results are fresh tensors: averaged in place.
        mean_over_ranks_([g for g in grads if g is not None], self.group)
        return [
            None if g is None else self.handles[id(p)].local_shard(g, self.rank, self.world_size)
            for p, g in zip(params, grads)
        ]


_MODULES: list[weakref.ref] = []


def _fsdp_modules() -> list[Any]:
    """The live ``fully_shard`` modules (found once by a scan of the heap, then remembered)."""
    from torch.distributed.fsdp import FSDPModule

    alive = [m for m in (r() for r in _MODULES) if m is not None]
    if alive:
        return alive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = [o for o in gc.get_objects() if isinstance(o, FSDPModule)]
    _MODULES[:] = [weakref.ref(m) for m in found]
    return found


def fsdp_handles(params: Sequence[Tensor], replicated: Sequence[Tensor] = ()) -> dict[int, FSDPHandle] | None:
    """``id(sharded param) → handle`` when ``params`` are FSDP2 shards; None when none is a
    DTensor. ``replicated`` are parameters allowed to stay plain tensors (a method's own
    learnable weights, whose gradients are the same on every rank).

    Raises:
        ValueError: some parameters are DTensors but not all, or a DTensor parameter belongs to
            no ``fully_shard`` module (another kind of DTensor parallelism), or this torch's
            FSDP2 lacks the parameter records gradsurg reads.
    """
    dtensors = [p for p in params if is_dtensor(p)]
    if not dtensors:
        return None
    allowed = {id(p) for p in replicated}
    params = [p for p in params if id(p) not in allowed]
    if len(dtensors) != len(params):
        raise ValueError(
            "optimizer: some parameters are FSDP2 shards (DTensors) and some are not; with "
            "fully_shard, shard every trained module (fully_shard(model) at the root)"
        )
    handles: dict[int, FSDPHandle] = {}
    wanted = {id(p) for p in params}
    for module in _fsdp_modules():
        try:
            group = module._get_fsdp_state()._fsdp_param_group
            records = [] if group is None else group.fsdp_params
        except AttributeError as error:
            raise ValueError(
                f"optimizer: this torch ({torch.__version__}) does not expose FSDP2's parameter "
                "records that gradsurg needs for sharded surgery"
            ) from error
        for record in records:
            if id(record.sharded_param) in wanted:
                handles[id(record.sharded_param)] = FSDPHandle(record)
    missing = [p for p in params if id(p) not in handles]
    if missing and _MODULES:
        _MODULES.clear()  # modules built since the last scan: look again once
        return fsdp_handles(params)
    if missing:
        raise ValueError(
            f"optimizer: {len(missing)} DTensor parameter(s) belong to no fully_shard module; "
            "gradsurg supports FSDP2 (torch.distributed.fsdp.fully_shard) sharding"
        )
    return handles
