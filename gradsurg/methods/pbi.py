"""``pbi``: penalty-based boundary intersection (Zhang & Li 2007, "MOEA/D: A Multiobjective
Evolutionary Algorithm Based on Decomposition", IEEE TEVC 11(6), Sec. II).

With the ideal point z*, the loss gap f = L − z* is split along the unit preference direction
ŵ = w/‖w‖ into its length along the ray and its distance to the ray,

    d₁ = fᵀŵ,   d₂ = ‖f − d₁ ŵ‖,   objective = d₁ + θ d₂,

so that minimising it moves L down the ray of w and towards it (θ weighs the second; the paper's
experiments use θ = 5). Its gradient with respect to the losses (the effective loss weights) is

    ∂objective/∂L = ŵ + θ p/‖p‖,   p = f − d₁ ŵ,

which can be negative for some tasks: PBI may trade a loss up to get back onto the ray.

At p = 0 (L on the ray, always the case for one task) d₂ has a kink; the weights are then ŵ (the
zero subgradient of d₂). Since p is computed with rounding, "on the ray" is decided as
‖p‖ ≤ 16·T·ε·‖f‖ (ε of float64): below that, p/‖p‖ would be the direction of rounding noise.

The ideal point is a fixed vector (default 0, for non-negative losses) or ``"running_min"``, the
element-wise minimum of the losses seen so far including the current call, as MOEA/D updates z*
with every new solution (then it is checkpointed state). The preference w (default all ones) is
settable between steps (``method.preference = w``), for training several trade-offs.

Evaluation: the weights are computed in float64 on the host from the detached losses, and the
returned scalar is ``value + Σ_t w_t (L_t − L_t.detach())``: the objective's value and its exact
gradient Σ_t w_t ∇L_t for any dtype or device of the losses. Norms are taken after dividing by the
largest entry, so they neither overflow nor underflow.

Differences from TorchJD 0.18 (``torchjd.scalarization.PBI``): TorchJD has no defaults for θ and
the preference (here θ = 5, the paper's value, and w = 1); it computes d₂ = √(‖p‖² + 1e-12), which
shifts the value by up to 1e-6·θ near the ray and damps the distance term of the weights to
θ p/√(‖p‖² + 1e-12) wherever ‖p‖ is not ≫ 1e-6: the weights are no longer scale-free (losses
(1, 2, 3)·1e-7 get a seventh of the term, measured), while gradsurg's exact norm with the
relative noise threshold above gives the same weights at every scale. TorchJD's reference point
is fixed (``None`` = 0); ``"running_min"`` is gradsurg's addition. The formula is otherwise the
same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._ideal_point import RunningIdealWeighting
from .cosmos import _preference_vector

__all__ = ["PBI"]


def _norm(x: Tensor) -> float:
    """‖x‖ without overflow or underflow (scaled by the largest entry)."""
    top = float(x.abs().max()) if x.numel() else 0.0
    return 0.0 if top == 0.0 else top * float(torch.linalg.vector_norm(x / top))


class PBI(RunningIdealWeighting):
    """Penalty-based boundary intersection ``d₁ + θ d₂`` of the loss gaps ``L − z*``.

    Args:
        theta: θ ≥ 0, the weight of the distance to the preference ray (default 5, as the paper).
        preference: w, T non-negative numbers, not all 0 (default: ones). Settable between steps.
        ideal: the ideal point z*: ``None`` (zeros), a sequence of T numbers, or
            ``"running_min"`` (running element-wise minimum of the losses, stateful).
    """

    name = "pbi"
    running_min: Tensor | None

    def __init__(
        self,
        theta: float = 5.0,
        preference: Sequence[float] | Tensor | None = None,
        ideal: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 <= theta < math.inf:
            raise ValueError(f"theta: must be a finite number >= 0, got {theta!r}")
        self.theta = float(theta)
        self.preference = preference
        self.set_ideal(ideal)

    @property
    def preference(self) -> Tensor | None:
        """The preference w (float64, ``(T,)``), or None for all ones."""
        return self._preference

    @preference.setter
    def preference(self, value: Sequence[float] | Tensor | None) -> None:
        self._preference = _preference_vector(value, "preference")

    @property
    def permutation_invariant(self) -> bool:  # type: ignore[override]
        """With the uniform preference and an ideal point that is 0 or the running minimum."""
        return self._preference is None and not isinstance(self.ideal, Tensor)

    @property
    def positively_homogeneous(self) -> bool:  # type: ignore[override]
        """With an ideal point that scales with the losses (0 or the running minimum): the
        weights depend on the direction of L − z* only."""
        return not isinstance(self.ideal, Tensor)

    def pbi_weights(self, gaps: Tensor) -> tuple[Tensor, float]:
        """``(∂objective/∂L, objective)`` at the float64 CPU loss gaps ``gaps = L − z*``."""
        num_tasks = gaps.numel()
        if self._preference is None:
            w = torch.ones(num_tasks, dtype=torch.float64)
        elif self._preference.numel() != num_tasks:
            raise ValueError(f"preference: has {self._preference.numel()} entries but there are {num_tasks} losses")
        else:
            w = self._preference
        unit_w = w / _norm(w)
        d1 = float(gaps @ unit_w)
        perp = gaps - d1 * unit_w
        d2 = _norm(perp)
        if not d2 > 16 * num_tasks * torch.finfo(torch.float64).eps * _norm(gaps):
            return unit_w.clone(), d1  # on the ray: the kink of d₂, zero subgradient
        return unit_w + self.theta * (perp / d2), d1 + self.theta * d2

    def objective(self, losses: Tensor) -> Tensor:
        """The PBI objective of the ``(T,)`` losses (value and gradient exact; see the module)."""
        losses = losses.reshape(-1)
        num_tasks = losses.numel()
        self.check_num_tasks(num_tasks)
        values = losses.detach().to(device="cpu", dtype=torch.float64)
        if isinstance(self.ideal, str):
            ideal = values if self.running_min is None else torch.minimum(self.running_min, values)
        elif self.ideal is None:
            ideal = torch.zeros(num_tasks, dtype=torch.float64)
        elif self.ideal.numel() != num_tasks:
            raise ValueError(f"ideal: has {self.ideal.numel()} entries but there are {num_tasks} losses")
        else:
            ideal = self.ideal
        weights, value = self.pbi_weights(values - ideal)
        if isinstance(self.ideal, str):
            self.running_min = ideal.clone()
            self._num_tasks = num_tasks
        self.last_weights = weights
        w = weights.to(device=losses.device, dtype=losses.dtype)
        return (w * (losses - losses.detach())).sum() + value

    def extra_repr(self) -> str:
        ideal = self.ideal if self.ideal is None or isinstance(self.ideal, str) else self.ideal.tolist()
        pref = None if self._preference is None else self._preference.tolist()
        return f"theta={self.theta}, preference={pref}, ideal={ideal!r}"
