"""Input conversion shared by the oracles."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_f64(J: Tensor) -> Tensor:
    """``J`` as a float64 CPU tensor of shape ``(T, P)``."""
    if not isinstance(J, Tensor) or J.dim() != 2:
        raise ValueError("J must be a (T, P) tensor")
    return J.detach().to(dtype=torch.float64, device="cpu")


def as_np(J) -> np.ndarray:
    """``J`` (tensor or array-like) as a float64 numpy array."""
    if isinstance(J, Tensor):
        return J.detach().cpu().numpy().astype(np.float64)
    return np.asarray(J, dtype=np.float64)
