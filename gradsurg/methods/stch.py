"""``stch``: Smooth Tchebycheff scalarisation (Lin et al. 2024, "Smooth Tchebycheff
Scalarization for Multi-Objective Optimization", ICML, arXiv:2402.19078, Eq. (9)).

The Tchebycheff scalarisation max_t λ_t (L_t − z_t) is replaced by its log-sum-exp smoothing

    g_μ(L | λ) = μ log Σ_t exp(λ_t (L_t − z_t) / μ),

with preference λ (default all ones), ideal point z and smoothing μ > 0 (μ → 0 recovers the
Tchebycheff max). Its gradient with respect to the losses is λ_t softmax(λ (L − z) / μ)_t, so
the effective weights sum to 1 when λ = 1. It is evaluated as a stable log-sum-exp.

The paper takes z to be the ideal point (the per-objective minima, known or estimated). Here
``ideal`` is a fixed vector (default 0, for non-negative losses) or ``"running_min"``: the
element-wise minimum of the (detached) losses seen so far, including the current call, which
is then part of the checkpointed state. (LibMTL's STCH variant additionally log-normalises the
losses by a warm-up nadir estimate; that is not the paper's formula and is not done here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._ideal_point import RunningIdealWeighting

__all__ = ["STCH"]


class STCH(RunningIdealWeighting):
    """Smooth Tchebycheff scalarisation ``μ log Σ_t exp(λ_t (L_t − z_t)/μ)``.

    Args:
        mu: smoothing parameter μ > 0.
        ideal: the ideal point z: ``None`` (zeros), a sequence of T numbers, or
            ``"running_min"`` (running element-wise minimum of the losses, stateful).
        preference: λ, T positive numbers (default ones).
    """

    name = "stch"
    permutation_invariant = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(
        self, mu: float = 1.0, ideal: str | Sequence[float] | None = None, preference: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if not isinstance(mu, (int, float)) or isinstance(mu, bool) or not mu > 0 or mu == float("inf"):
            raise ValueError(f"mu: must be a finite number > 0, got {mu!r}")
        self.mu = float(mu)
        self.set_ideal(ideal)
        if preference is None:
            self.preference: Tensor | None = None
        else:
            try:
                self.preference = torch.as_tensor(list(preference), dtype=torch.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"preference: expected a sequence of positive numbers, got {preference!r}") from None
            if self.preference.numel() == 0 or not bool((self.preference > 0).all() & torch.isfinite(self.preference).all()):
                raise ValueError(f"preference: expected positive finite numbers, got {preference!r}")

    def _vector(self, value: Tensor | None, num_tasks: int, argname: str, default: float) -> Tensor:
        if value is None:
            return torch.full((num_tasks,), default, dtype=torch.float64)
        if value.numel() != num_tasks:
            raise ValueError(f"{argname}: has {value.numel()} entries but there are {num_tasks} losses")
        return value

    def objective(self, losses: Tensor) -> Tensor:
        losses = losses.reshape(-1)
        num_tasks = losses.numel()
        self.check_num_tasks(num_tasks)
        lam = self._vector(self.preference, num_tasks, "preference", 1.0)
        values = losses.detach().to(device="cpu", dtype=torch.float64)
        if isinstance(self.ideal, str):
            ideal = values if self.running_min is None else torch.minimum(self.running_min, values)
        else:
            ideal = self._vector(self.ideal, num_tasks, "ideal", 0.0)
        lam_d = lam.to(device=losses.device, dtype=losses.dtype)
        z_d = ideal.to(device=losses.device, dtype=losses.dtype)
        out = self.mu * torch.logsumexp(lam_d * (losses - z_d) / self.mu, dim=0)
        self.last_weights = lam * torch.softmax(lam * (values - ideal) / self.mu, dim=0)
        if isinstance(self.ideal, str):
            self.running_min = ideal.clone()
            self._num_tasks = num_tasks
        return out

    def extra_repr(self) -> str:
        ideal = self.ideal if self.ideal is None or isinstance(self.ideal, str) else self.ideal.tolist()
        pref = None if self.preference is None else self.preference.tolist()
        return f"mu={self.mu}, ideal={ideal!r}, preference={pref}"
