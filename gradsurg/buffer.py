"""The flat T×P buffer J of per-task gradients of the shared parameters, and its layout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["GradBuffer"]


class GradBuffer:
    """Owns J (``(T, P)``), the flat combined-gradient buffer (``(P,)``) and their views.

    Row ``t`` of J holds task ``t``'s gradient of every shared parameter, one after the other in
    parameter order; ``rows[t][k]`` is the view of parameter ``k`` in row ``t``, shaped like the
    parameter, and ``grads[k]`` the view of parameter ``k`` in the combined buffer (what becomes
    its ``.grad``). Both are allocated once and reused while the parameters and T stay the same.

    Raises:
        ValueError: if the parameters span several devices or dtypes (one buffer cannot hold
            them; pass ``shared=`` per device/dtype group to separate ``GradSurgery`` instances).
    """

    def __init__(self, params: Sequence[Tensor], num_tasks: int) -> None:
        self.check_layout(params)
        self.params = list(params)
        self.num_tasks = num_tasks
        self.key = self.make_key(self.params, num_tasks)
        device, dtype = params[0].device, params[0].dtype
        self.numel = sum(p.numel() for p in params)
        self.matrix = torch.empty(num_tasks, self.numel, device=device, dtype=dtype)
        self.flat = torch.empty(self.numel, device=device, dtype=dtype)
        self.rows = [self._views(self.matrix[t]) for t in range(num_tasks)]
        self.grads = self._views(self.flat)

    @staticmethod
    def check_layout(params: Sequence[Tensor]) -> None:
        """Raise ``ValueError`` unless ``params`` is non-empty, on one device, of one dtype."""
        if not params:
            raise ValueError("shared: no shared parameters")
        kinds = {(p.device, p.dtype) for p in params}
        if len(kinds) > 1:
            found = ", ".join(sorted(f"{d}/{t}".replace("torch.", "") for d, t in kinds))
            raise ValueError(
                f"shared: the shared parameters must share one device and dtype, found {found}; "
                "use one GradSurgery per device/dtype group"
            )
        if not params[0].dtype.is_floating_point:
            raise ValueError(f"shared: parameters must be floating point, got {params[0].dtype}")

    @staticmethod
    def make_key(params: Sequence[Tensor], num_tasks: int) -> tuple:
        """What must stay equal for a buffer to be reused."""
        return (num_tasks, tuple((id(p), p.shape, p.dtype, p.device) for p in params))

    def _views(self, flat: Tensor) -> list[Tensor]:
        views, offset = [], 0
        for p in self.params:
            views.append(flat[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        return views

    def owns_grad(self, k: int, grad: Tensor) -> bool:
        """Whether ``grad`` is this buffer's view for parameter ``k`` (set by an earlier step)."""
        view = self.grads[k]
        return grad.data_ptr() == view.data_ptr() and grad.stride() == view.stride()
