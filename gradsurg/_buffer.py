"""The T×P buffers J of per-task gradients of the shared parameters, one per layout group.

Shared parameters of several dtypes or devices (a bf16 model with fp32 ``keep_in_fp32_modules``,
a model split over two GPUs) live in one buffer per (device, dtype) group: the Gram matrix is
the float64 sum of the groups' Grams, one set of weights combines every group.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from ._dtensor import local_view

__all__ = ["GradBuffer", "SharedBuffers", "check_floating"]


class GradBuffer:
    """Owns J (``(T, P)``), the flat combined-gradient buffer (``(P,)``) and their views.

    Row ``t`` of J holds task ``t``'s gradient of every shared parameter, one after the other in
    parameter order; ``rows[t][k]`` is the view of parameter ``k`` in row ``t``, shaped like the
    parameter, and ``grads[k]`` the view of parameter ``k`` in the combined buffer (what becomes
    its ``.grad``). J is allocated once and reused while the parameters and T stay the same; the
    combined buffer lives as long as the ``.grad`` views do (see :meth:`release`).

    Raises:
        ValueError: if the parameters span several devices or dtypes (one buffer cannot hold
            them: :class:`SharedBuffers` splits them into groups first).
    """

    def __init__(self, params: Sequence[Tensor], num_tasks: int, j_dtype: torch.dtype | None = None) -> None:
        self.check_layout(params)
        self.params = list(params)
        self.num_tasks = num_tasks
        self.key = self.make_key(self.params, num_tasks)
        # FSDP2 shards (DTensors): J holds this rank's local shards.
        self._local = [local_view(p) for p in self.params]
        device, dtype = self._local[0].device, self._local[0].dtype
        self.numel = sum(p.numel() for p in self._local)
        # J may be stored in a narrower dtype (j_dtype=torch.bfloat16: half the memory); the
        # combined gradient keeps the parameters' dtype.
        self.matrix = torch.empty(num_tasks, self.numel, device=device, dtype=j_dtype or dtype)
        self.grad_dtype = dtype
        self.rows = [self._views(self.matrix[t]) for t in range(num_tasks)]
        # The combined gradient is not held between steps: the shared .grad (views of it) keep
        # it alive, and zero_grad(set_to_none=True) frees it as it frees plain gradients, so the
        # memory gradsurg adds over T per-task backward passes is J alone. While the .grad views
        # live, the weak reference finds the buffer again and the next step reuses it.
        self._flat_ref: weakref.ref[Tensor] | None = None
        self._held: tuple[Tensor, list[Tensor]] | None = None

    def _hold(self) -> tuple[Tensor, list[Tensor]]:
        if self._held is None:
            flat = None if self._flat_ref is None else self._flat_ref()
            views = None if flat is None else self._views(flat)
            # Reuse the old buffer only while it is every parameter's current .grad: a gradient
            # the user set aside (p.grad = None, but a reference kept) is never written over.
            if views is None or not all(
                p.grad is not None and _same_view(v, local_view(p.grad)) for p, v in zip(self.params, views)
            ):
                local = self._local[0]
                flat = torch.empty(self.numel, device=local.device, dtype=self.grad_dtype)
                self._flat_ref = weakref.ref(flat)
                views = self._views(flat)
            assert flat is not None
            self._held = (flat, views)
        return self._held

    @property
    def flat(self) -> Tensor:
        """The flat ``(P,)`` combined-gradient buffer: the one the ``.grad`` views still hold,
        else a new one; held by the buffer until :meth:`release`."""
        return self._hold()[0]

    @property
    def grads(self) -> list[Tensor]:
        """The per-parameter views of :attr:`flat`."""
        return self._hold()[1]

    def release(self) -> None:
        """Stop holding the combined buffer (end of a step): from now on only the ``.grad``
        views keep it alive."""
        self._held = None

    @staticmethod
    def check_layout(params: Sequence[Tensor]) -> None:
        """Raise ``ValueError`` unless ``params`` is non-empty, on one device, of one dtype."""
        if not params:
            raise ValueError("shared: no shared parameters")
        kinds = {(local_view(p).device, p.dtype) for p in params}
        if len(kinds) > 1:
            found = ", ".join(sorted(f"{d}/{t}".replace("torch.", "") for d, t in kinds))
            raise ValueError(f"shared: one buffer holds one device and dtype, found {found}")
        if not params[0].dtype.is_floating_point:
            raise ValueError(f"shared: parameters must be floating point, got {params[0].dtype}")

    @staticmethod
    def make_key(params: Sequence[Tensor], num_tasks: int) -> tuple:
        """What must stay equal for a buffer to be reused."""
        return (num_tasks, tuple((id(p), p.shape, p.dtype, p.device) for p in params))

    def _views(self, flat: Tensor) -> list[Tensor]:
        views, offset = [], 0
        for p in self._local:
            views.append(flat[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        return views

    def owns_grad(self, k: int, grad: Tensor) -> bool:
        """Whether ``grad`` is this buffer's view for parameter ``k`` (set by an earlier step;
        the view keeps the buffer alive, so a live ``grad`` is never mistaken for a freed one)."""
        return _same_view(self.grads[k], local_view(grad))


def _same_view(view: Tensor, grad: Tensor) -> bool:
    return grad.data_ptr() == view.data_ptr() and grad.stride() == view.stride() and grad.shape == view.shape


def check_floating(params: Sequence[Tensor]) -> None:
    """Raise ``ValueError`` unless every parameter is floating point."""
    for k, p in enumerate(params):
        if not p.dtype.is_floating_point:
            raise ValueError(f"shared: parameter {k} is {p.dtype}; shared parameters must be floating point")


class SharedBuffers:
    """The shared parameters split into (device, dtype) groups, one :class:`GradBuffer` each.

    ``slots[k]`` is ``(group, position in the group)`` of shared parameter ``k``. Groups come in
    the order their first parameter appears, so one layout gives exactly one group and the
    behaviour of a single buffer.
    """

    def __init__(self, params: Sequence[Tensor], num_tasks: int, j_dtype: torch.dtype | None = None) -> None:
        check_floating(params)
        self.params = list(params)
        self.num_tasks = num_tasks
        self.key = self.make_key(self.params, num_tasks, j_dtype)
        layouts: dict[tuple, list[int]] = {}
        for k, p in enumerate(self.params):
            layouts.setdefault((local_view(p).device, p.dtype), []).append(k)
        self.groups: list[GradBuffer] = []
        self.slots: list[tuple[int, int]] = [(0, 0)] * len(self.params)
        for g, members in enumerate(layouts.values()):
            self.groups.append(GradBuffer([self.params[k] for k in members], num_tasks, j_dtype))
            for j, k in enumerate(members):
                self.slots[k] = (g, j)

    def release(self) -> None:
        """End of a step: every group stops holding its combined buffer (:meth:`GradBuffer.release`)."""
        for group in self.groups:
            group.release()

    @staticmethod
    def make_key(params: Sequence[Tensor], num_tasks: int, j_dtype: torch.dtype | None = None) -> tuple:
        """What must stay equal for the buffers to be reused."""
        return (*GradBuffer.make_key(params, num_tasks), j_dtype)

    def split(self, grads: Sequence[Tensor | None]) -> list[list[Tensor | None]]:
        """One task's gradients (in shared-parameter order) as one list per group."""
        out: list[list[Tensor | None]] = [[None] * len(b.params) for b in self.groups]
        for (g, j), grad in zip(self.slots, grads):
            out[g][j] = grad
        return out
