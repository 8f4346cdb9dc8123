"""The functional layer under :class:`GradSurgery`: Gram matrix and aggregation of given gradients."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .kernels import get_backend
from .methods import GramMethod, MatrixMethod, Method, resolve_method

__all__ = ["aggregate", "gramian"]

Grads = Tensor | Sequence[Sequence[Tensor]]


def _as_lists(grads: Grads) -> tuple[Tensor | None, list[list[Tensor]] | None]:
    if isinstance(grads, Tensor):
        if grads.dim() < 1 or grads.shape[0] == 0:
            raise ValueError(f"grads: expected a (T, ...) tensor with T ≥ 1, got shape {tuple(grads.shape)}")
        if not grads.dtype.is_floating_point:
            raise ValueError(f"grads: expected a floating-point tensor, got {grads.dtype}")
        return grads.reshape(grads.shape[0], -1), None
    if (
        isinstance(grads, Sequence)
        and grads
        and all(isinstance(row, Sequence) and all(isinstance(g, Tensor) for g in row) for row in grads)
    ):
        lists = [list(row) for row in grads]
        shapes = [tuple(g.shape) for g in lists[0]]
        if not shapes:
            raise ValueError("grads: task 0 has no gradients")
        for t, row in enumerate(lists):
            if [tuple(g.shape) for g in row] != shapes:
                raise ValueError(f"grads: task {t}'s gradient shapes differ from task 0's")
        return None, lists
    raise TypeError("grads: expected a (T, P) tensor or a list of per-task lists of per-parameter gradients")


def gramian(grads: Grads, /, *, backend: str = "auto") -> Tensor:
    """The Gram matrix G_ij = ⟨g_i, g_j⟩ of T task gradients, accumulated in float64.

    Args:
        grads: a ``(T, P)`` (or ``(T, ...)``) tensor of flattened task gradients, or
            ``grads[t][k]``, task ``t``'s gradient of parameter ``k`` (then J is never built).
        backend: kernel backend (see :class:`GradSurgery`).

    Returns:
        float64 ``(T, T)`` tensor on the gradients' device.
    """
    matrix, lists = _as_lists(grads)
    if matrix is not None:
        return get_backend(backend, matrix.device).gram(matrix)
    assert lists is not None
    return get_backend(backend, lists[0][0].device).gram_lists(lists)


def aggregate(grads: Grads, method: str | Method, /, *, backend: str = "auto") -> Tensor | list[Tensor]:
    """Combine T task gradients with a method: ``Σ_t w_t g_t`` with ``w = method.weights(G)``.

    Args:
        grads: as in :func:`gramian`.
        method: a method name or instance (a stateful instance advances its state).
        backend: kernel backend.

    Returns:
        For a tensor input, the combined gradient of shape ``grads.shape[1:]``; for lists, one
        combined tensor per parameter.

    >>> import torch, gradsurg
    >>> gradsurg.aggregate(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), "pcgrad")
    tensor([0.5000, 1.5000])
    """
    method = resolve_method(method)
    if not isinstance(method, (GramMethod, MatrixMethod)):
        raise ValueError(
            f"method: {method.name!r} weighs the losses, not given gradients "
            f"({type(method).__name__} is a loss-space or double-backward method); use it through GradSurgery"
        )
    matrix, lists = _as_lists(grads)
    if isinstance(method, MatrixMethod):
        if matrix is None:
            assert lists is not None
            matrix = torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in lists])
        out = torch.empty(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
        method.combine_into(out, matrix)
    else:
        weights = method.weights(gramian(grads, backend=backend))
        if matrix is None:
            assert lists is not None
            w = weights.tolist()
            return [sum(w_t * row[k] for w_t, row in zip(w, lists)) for k in range(len(lists[0]))]  # type: ignore[misc]
        out = torch.empty(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
        get_backend(backend, matrix.device).combine_into(out, matrix, weights)
    if lists is None:
        assert isinstance(grads, Tensor)
        return out.view(grads.shape[1:])
    return [part.view_as(g) for part, g in zip(out.split([g.numel() for g in lists[0]]), lists[0])]
