"""``excess_mtl``: ExcessMTL (He et al. 2024, "Robust Multi-Task Learning with Excess Risks",
ICML, PMLR 235).

ExcessMTL weights the tasks by how far each is from its own optimum (its *excess risk*) rather
than by its loss, so noisy tasks with a high irreducible loss do not take over. Per step:

    S_t ← S_t + g_t ⊙ g_t                        (AdaGrad-style diagonal Hessian, Eq. 7:
                                                  H_t ≈ diag(√S_t))
    E_t = g_tᵀ H_t⁻¹ g_t = Σ_k g_tk² / √(S_tk + ε)  (second-order excess-risk estimate, Eq. 6)
    α_t ← α_t exp(η E_t / E_t⁰),  α ← α / Σ α      (exponentiated-gradient step, Eq. 9)

with E_t⁰ the baseline excess risk (the mean of E_t over ``n_warmup_steps`` warm-up steps, during
which α stays uniform; Appendix C.1 of the paper), ε = 1e−7, α starting uniform on the simplex
(the paper; the reference code starts at 1, which only changes the first normalisation). The
update is d = Σ_t α_t g_t.

Why a matrix method (documented scope): E_t needs the *element-wise* accumulated squares S_t, a
(T, P) state that no function of the Gram matrices can reproduce (replacing diag(√S_t) by a
multiple of the identity would reduce E_t to ‖g_t‖²/c_t, a different method). gradsurg therefore
implements the exact rule as a :class:`MatrixMethod`: ``combine_into`` updates S in column
chunks, computes E, updates α (state) and writes ``beta·out + αᵀ J``. The state costs T·P
numbers in J's dtype, on J's device — as much as the gradient buffer itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import MatrixMethod

__all__ = ["ExcessMTL", "excess_risks"]

_EPS = 1e-7


def excess_risks(matrix: Tensor, sq_sum: Tensor) -> Tensor:
    """``E_t = Σ_k g_tk² / √(S_tk + ε)`` for the (already updated) accumulated squares ``S``."""
    sq = matrix.to(torch.float64) ** 2
    return (sq / torch.sqrt(sq_sum.to(torch.float64) + _EPS)).sum(dim=1)


class ExcessMTL(MatrixMethod):
    """ExcessMTL (He et al. 2024) with the paper's diagonal (AdaGrad) Hessian estimate.

    Args:
        robust_step_size: η > 0 of the exponentiated-gradient weight update (paper: 1).
        n_warmup_steps: steps ≥ 0 with uniform weights whose mean excess risk becomes the
            baseline E⁰ (0: the first step's E is the baseline, so its normalised risks are 1).
        chunk_size: columns of J processed at a time.

    State (in ``state_dict()``): S (T, P), α (T,), the warm-up sum and baseline, the step count.
    """

    name = "excess_mtl"
    permutation_invariant = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 1, chunk_size: int = 1 << 16) -> None:
        super().__init__()
        if not (isinstance(robust_step_size, (int, float)) and 0.0 < robust_step_size < float("inf")):
            raise ValueError(f"robust_step_size: must be a positive finite number, got {robust_step_size!r}")
        if not (isinstance(n_warmup_steps, int) and n_warmup_steps >= 0):
            raise ValueError(f"n_warmup_steps: must be an int ≥ 0, got {n_warmup_steps!r}")
        if not (isinstance(chunk_size, int) and chunk_size > 0):
            raise ValueError(f"chunk_size: must be a positive int, got {chunk_size!r}")
        self.robust_step_size = float(robust_step_size)
        self.n_warmup_steps = n_warmup_steps
        self.chunk_size = chunk_size
        self._clear()

    def _clear(self) -> None:
        self.sq_sum: Tensor | None = None
        self.alpha: Tensor | None = None
        self.warmup_sum: Tensor | None = None
        self.baseline: Tensor | None = None
        self.steps = 0

    def step_weights(self, matrix: Tensor) -> Tensor:
        """Advance the state with J and return the float64 CPU weights α for this step."""
        num_tasks, num_cols = matrix.shape
        self.check_num_tasks(num_tasks)
        if self.sq_sum is None or self.sq_sum.shape != matrix.shape:
            if self.sq_sum is not None:
                raise ValueError(
                    f"matrix: ExcessMTL's state has shape {tuple(self.sq_sum.shape)}, got {tuple(matrix.shape)}; "
                    "call reset()"
                )
            self.sq_sum = torch.zeros_like(matrix)
            self.alpha = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
            self.warmup_sum = torch.zeros(num_tasks, dtype=torch.float64)
        self.sq_sum = self.sq_sum.to(matrix.device)
        risk = torch.zeros(num_tasks, dtype=torch.float64, device=matrix.device)
        for start in range(0, num_cols, self.chunk_size):
            stop = min(start + self.chunk_size, num_cols)
            part = matrix[:, start:stop]
            self.sq_sum[:, start:stop].add_(part * part)
            risk += excess_risks(part, self.sq_sum[:, start:stop])
        risk = risk.cpu()
        assert self.alpha is not None and self.warmup_sum is not None  # set with sq_sum above
        self._num_tasks = num_tasks
        step = self.steps
        self.steps += 1
        if step < self.n_warmup_steps:
            self.warmup_sum += risk
            return self.alpha.clone()
        if self.baseline is None:
            self.baseline = self.warmup_sum / self.n_warmup_steps if self.n_warmup_steps > 0 else risk.clone()
        ratio = risk / (self.baseline + _EPS)
        # α ∝ α exp(η E/E⁰) in log space: a zero baseline makes the ratio huge, not the
        # weights inf/NaN.
        self.alpha = torch.softmax(torch.log(self.alpha) + self.robust_step_size * ratio, dim=0)
        return self.alpha.clone()

    @torch.no_grad()
    def combine_into(self, out: Tensor, matrix: Tensor, *, beta: float = 0.0) -> None:
        """``out ← beta·out + αᵀ J`` after advancing the state with ``J``."""
        w = self.step_weights(matrix)
        out.addmv_(matrix.T, w.to(device=matrix.device, dtype=matrix.dtype), beta=beta)

    def reset(self) -> None:
        """Forget S, α and the baseline (back to warm-up)."""
        super().reset()
        self._clear()

    def get_extra_state(self) -> dict[str, Any]:
        return {
            **super().get_extra_state(),
            "sq_sum": self.sq_sum,
            "alpha": self.alpha,
            "warmup_sum": self.warmup_sum,
            "baseline": self.baseline,
            "steps": self.steps,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        for key in ("sq_sum", "alpha", "warmup_sum", "baseline"):
            value = state[key]
            setattr(self, key, None if value is None else value.clone())
        self.steps = int(state["steps"])

    def extra_repr(self) -> str:
        return f"robust_step_size={self.robust_step_size}, n_warmup_steps={self.n_warmup_steps}"
