"""``cosmos``: the COSMOS scalarisation (Ruchte & Grabocka 2021, "Scalable Pareto Front
Approximation for Deep Multi-Objective Learning", ICDM, arXiv:2103.13392, Eq. (5)).

A linear scalarisation with preference r, minus a reward for the loss vector pointing along r:

    objective = Σ_t r_t L_t − λ cos(r, L),   cos(r, L) = Σ_t r_t L_t / (‖r‖ ‖L‖).

Its gradient with respect to the losses (the effective loss weights) is

    ∂objective/∂L_t = r_t − (λ / ‖L‖) (r_t/‖r‖ − cos(r, L) · L_t/‖L‖),

the preference plus a term that pulls the loss vector towards the ray of r (zero when L is on it).

In the paper, r is drawn afresh from a Dirichlet distribution at every batch and also fed to the
model (concatenated to its input), so that one network learns the whole Pareto front. gradsurg
implements the objective only: r is the ``preference`` attribute (uniform 1/T by default); to
train as the paper does, draw r yourself before each step, give it to the model and set
``method.preference = r``. λ is tuned per data set in the paper (0.01 … 8); the default 1.0 is
gradsurg's choice.

Evaluation: the weights above are computed in float64 on the host from the detached losses, and
the returned scalar is ``value + Σ_t w_t (L_t − L_t.detach())``: the objective's value and its
exact gradient Σ_t w_t ∇L_t, whatever the dtype or device of the losses. ‖L‖ is taken after
dividing L by max_t |L_t| (the cosine does not change), so it neither overflows nor underflows;
L = 0 (no direction) gives cos = 0 and the weights r.

Differences from TorchJD 0.18 (``torchjd.scalarization.COSMOS``): TorchJD has no defaults (λ and
the preference are required); here λ = 1 and r = 1/T. TorchJD's cosine is
``torch.nn.functional.cosine_similarity``, which clamps each norm at 1e-8: for ‖L‖ < 1e-8 its
cosine shrinks towards 0 (and is 0/0-free at L = 0); gradsurg's is exact at every scale. The
formula is otherwise the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import LossWeighting

__all__ = ["COSMOS"]


def _preference_vector(preference: Sequence[float] | Tensor | None, argname: str) -> Tensor | None:
    """``preference`` as a float64 CPU vector of finite non-negative numbers, not all 0 (or None)."""
    if preference is None:
        return None
    try:
        vec = torch.as_tensor(
            preference.detach().cpu() if isinstance(preference, Tensor) else list(preference), dtype=torch.float64
        ).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{argname}: expected a sequence of non-negative numbers, got {preference!r}") from None
    if vec.numel() == 0 or not bool(torch.isfinite(vec).all() & (vec >= 0).all()) or not bool((vec > 0).any()):
        raise ValueError(f"{argname}: expected finite non-negative numbers, not all 0, got {preference!r}")
    return vec


class COSMOS(LossWeighting):
    """COSMOS: ``Σ_t r_t L_t − λ cos(r, L)``.

    Args:
        lam: λ ≥ 0, the weight of the cosine reward (0: the plain linear scalarisation r·L).
        preference: r, T non-negative numbers, not all 0 (default: 1/T each). Settable between
            steps (``method.preference = r``), as the paper redraws it every batch.
    """

    name = "cosmos"

    def __init__(self, lam: float = 1.0, preference: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < math.inf:
            raise ValueError(f"lam: must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)
        self.preference = preference

    @property
    def preference(self) -> Tensor | None:
        """The preference r (float64, ``(T,)``), or None for the uniform 1/T."""
        return self._preference

    @preference.setter
    def preference(self, value: Sequence[float] | Tensor | None) -> None:
        self._preference = _preference_vector(value, "preference")

    @property
    def permutation_invariant(self) -> bool:  # type: ignore[override]
        """With the uniform preference only (a given r is tied to the task positions)."""
        return self._preference is None

    @property
    def positively_homogeneous(self) -> bool:  # type: ignore[override]
        """Only at λ = 0: the cosine is scale-free, so its gradient does not scale with L."""
        return self.lam == 0.0

    @property
    def linear_under_scaling(self) -> bool:  # type: ignore[override]
        """Only at λ = 0 (constant weights r)."""
        return self.lam == 0.0

    def cosmos_weights(self, values: Tensor) -> tuple[Tensor, float]:
        """``(∂objective/∂L, objective)`` at the float64 CPU losses ``values`` (shape ``(T,)``)."""
        num_tasks = values.numel()
        if self._preference is None:
            r = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        elif self._preference.numel() != num_tasks:
            raise ValueError(f"preference: has {self._preference.numel()} entries but there are {num_tasks} losses")
        else:
            r = self._preference
        linear = float(r @ values)
        top = float(values.abs().max())
        if top == 0.0 or self.lam == 0.0:
            return r.clone(), linear
        unit_r = r / torch.linalg.vector_norm(r)
        scaled = values / top  # the cosine is scale-free; this keeps ‖L‖ in range
        norm_scaled = torch.linalg.vector_norm(scaled)
        unit_l = scaled / norm_scaled
        cos = float(unit_r @ unit_l)
        norm_l = top * float(norm_scaled)
        weights = r - (self.lam / norm_l) * (unit_r - cos * unit_l)
        return weights, linear - self.lam * cos

    def objective(self, losses: Tensor) -> Tensor:
        """The COSMOS objective of the ``(T,)`` losses (value and gradient exact; see the module)."""
        losses = losses.reshape(-1)
        values = losses.detach().to(device="cpu", dtype=torch.float64)
        weights, value = self.cosmos_weights(values)
        self.last_weights = weights
        w = weights.to(device=losses.device, dtype=losses.dtype)
        return (w * (losses - losses.detach())).sum() + value

    def extra_repr(self) -> str:
        pref = None if self._preference is None else self._preference.tolist()
        return f"lam={self.lam}, preference={pref}"
