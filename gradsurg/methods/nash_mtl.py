"""``nash_mtl``: Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", ICML,
arXiv:2202.01017, Theorem 5.1 / Algorithm 1).

The Nash bargaining solution of the tasks is the update d = Σ_i α_i g_i whose weights solve

    (G α)_i = 1 / α_i  for every i,   α > 0,                                  (*)

(each task's "utility" g_iᵀd equals 1/α_i). (*) is the stationarity condition of the strictly
convex, self-concordant function f(α) = ½ αᵀ G α − Σ_i log α_i, so gradsurg finds its unique
solution by damped Newton (Nesterov–Nemirovski step 1/(1+λ) while the Newton decrement λ is
≥ 1/4, full steps after): global convergence, then quadratic, to float64 precision (‖Gα − 1/α‖
relative ≤ 1e-12 in a handful of iterations). f has a minimiser iff no non-negative combination
of the gradients vanishes (0 ∉ conv{g_i}, checked with the exact MGDA min-norm solver); when it
does, no direction improves every task, (*) has no solution and the weights are 0. A zero
gradient is left out (weight 0): its utility g_iᵀd is 0 for every d.

Differences from the official implementation (and TorchJD's ``NashMTL``, which copies it): they
solve (*) approximately by a few (``optim_niter = 20``) convex-concave steps with cvxpy/ECOS,
stopping when ‖Gα − 1/α‖ < 1e-3, warm-started from the previous step's α (so their result
depends on the history); gradsurg solves (*) exactly and statelessly. Their division of G by
‖G‖_F is undone in their constraint α_i (G α)_i ≥ 1 (the normalisation factor multiplies back),
so both target the same α of (*) for G itself. Where their iterations converge the updates agree
to ~1e-8; on badly scaled or strongly conflicting inputs (task-gradient norms spanning 1e-2 …
1e2, say) their 20 iterations stop with max_i |α_i (Gα)_i − 1| up to ~0.2, and the updates differ
by that much. (The official code also starts from float32 ones; irrelevant for the exact solve.)
"0 ∈ conv{g_i}" is decided as min-norm² ≤ 1e-12 for the unit gradients g_i/‖g_i‖ (near that
boundary α → ∞).

Scale: (*) is invariant under Jacobi scaling — with α = D⁻¹β, D = diag ‖g_i‖, it reads C β = 1/β
for the cosine matrix C — so it is solved on C, and the update Σ α_i g_i = Σ β_i g_i/‖g_i‖ (before
``max_norm``) does not depend on the gradient norms at all. The previous version solved it on G/max_i G_ii and
decided "0 ∈ conv" against the largest norm, so with norms spanning 1e-45 … 1e45 the hull test
always fired (the min-norm point is at most the smallest norm) and the weights were 0.
``max_norm`` (default 1.0, as theirs; 0 disables) rescales α so that ‖d‖ = √(αᵀGα) ≤ max_norm;
``update_weights_every`` (default 1) recomputes α every that many calls and reuses the last α
(clipped against the current G) in between.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._minnorm import min_norm_weights_np
from .base import GramMethod

__all__ = ["NashMTL", "nash_mtl_weights"]

# 0 ∈ conv{g_i} is declared when the min-norm point of the unit gradients g_i/‖g_i‖ has a squared
# norm below this (then some β_i = α_i‖g_i‖ would exceed ~1e6).
_HULL_TOL = 1e-12
_MAX_NEWTON = 200
_TINY = float(np.finfo(np.float64).tiny)


def _solve_bargaining(gram: np.ndarray) -> np.ndarray | None:
    """The α > 0 with G α = 1/α for a G whose diagonal is positive, or None if there is none.

    Solved on the cosine matrix C = D⁻¹ G D⁻¹ (D = diag √G_ii): with α = D⁻¹ β the equation
    becomes C β = 1/β, so the update Σ α_i g_i = Σ β_i g_i/‖g_i‖ does not depend on the norms.
    In numpy: Newton's dependent small steps are dominated by per-call overhead, which torch's
    is several times numpy's.
    """
    size = gram.shape[0]
    norms = np.sqrt(np.diagonal(gram))
    g = gram / norms[:, None] / norms[None, :]
    wmin = min_norm_weights_np(g)
    if not float(wmin @ g @ wmin) > _HULL_TOL:
        return None
    ones = np.ones(size)
    beta = ones * (size / float(ones @ g @ ones)) ** 0.5  # best multiple of 1
    for _ in range(_MAX_NEWTON):
        inv = 1.0 / beta
        resid = g @ beta - inv
        hess = g + np.diag(inv * inv)
        try:
            step = -np.linalg.solve(hess, resid)
        except np.linalg.LinAlgError:  # singular to working precision: keep the last iterate
            break
        dec2 = float(-(resid @ step))
        dec = dec2**0.5 if dec2 > 0 else 0.0
        beta = beta + (step / (1.0 + dec) if dec >= 0.25 else step)
        if float(np.abs(resid * beta).max()) <= 1e-14 and dec < 1e-7:
            break
    beta = np.maximum(beta, _TINY)
    if not bool(np.isfinite(beta).all()):
        return None
    return beta / norms  # G α = 1/α for G itself


def nash_mtl_weights(gram: Tensor, max_norm: float = 0.0) -> Tensor:
    """Nash-MTL weights (float64, ``(T,)``); see the module docstring for the options."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    num_tasks = g.shape[0]
    alpha = np.zeros(num_tasks)
    keep = np.flatnonzero(np.diagonal(g) > 0)
    if keep.size == 0:
        return torch.from_numpy(alpha)
    sol = _solve_bargaining(g[np.ix_(keep, keep)])
    if sol is None:
        return torch.from_numpy(alpha)
    alpha[keep] = sol
    return _clip(torch.from_numpy(alpha), gram, max_norm)


def _clip(alpha: Tensor, gram: Tensor, max_norm: float) -> Tensor:
    if max_norm > 0:
        norm = float(alpha @ gram @ alpha) ** 0.5 if float(alpha @ gram @ alpha) > 0 else 0.0
        if norm > max_norm:
            alpha = alpha * (max_norm / norm)
    return alpha


class NashMTL(GramMethod):
    """Nash-MTL (Navon et al. 2022): the Nash bargaining solution G α = 1/α, solved exactly.

    Args:
        max_norm: clip ‖d‖ to this value (``0`` disables; default 1.0 as the paper's code).
        update_weights_every: recompute α every that many calls (default 1).
    """

    name = "nash_mtl"
    permutation_invariant = scale_invariant = non_conflicting = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1) -> None:
        super().__init__()
        if isinstance(max_norm, bool) or not (isinstance(max_norm, (int, float)) and 0 <= max_norm < math.inf):
            raise ValueError(f"max_norm: must be a finite number ≥ 0 (0 disables), got {max_norm!r}")
        every = update_weights_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"update_weights_every: must be a positive integer, got {every!r}")
        self.max_norm = float(max_norm)
        self.update_weights_every = update_weights_every
        self._step = 0
        self._alpha: Tensor | None = None

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        if self._alpha is None or self._step % self.update_weights_every == 0:
            self._alpha = nash_mtl_weights(gram, 0.0)
        self._step += 1
        return _clip(self._alpha.clone(), gram, self.max_norm)

    def reset(self) -> None:
        """Forget the step counter and the cached α."""
        super().reset()
        self._step = 0
        self._alpha = None

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus the step counter and the cached α."""
        return {**super().get_extra_state(), "step": self._step, "alpha": self._alpha}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        self._step = int(state.get("step", 0))
        self._alpha = state.get("alpha")

    def extra_repr(self) -> str:
        return f"max_norm={self.max_norm}, update_weights_every={self.update_weights_every}"
