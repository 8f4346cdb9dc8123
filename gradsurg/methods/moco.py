"""``moco``: MoCo (Fernando et al. 2023, "Mitigating Gradient Bias in Multi-objective Learning:
A Provably Convergent Approach", ICLR, arXiv:2210.12624, Algorithm 1).

Stochastic MGDA is biased because the min-norm weights are a nonlinear function of noisy
gradients. MoCo tracks each task gradient with a moving average y_t and takes one projected
gradient step on the MGDA weights per iteration:

    y_t ← y_t − β (y_t − g_t)                        (tracking, for every task t)
    λ   ← Π_Δ(λ − γ (Y Yᵀ + ρ I) λ)                  (Y the T×P matrix of the y_t)
    d   = Yᵀ λ

Π_Δ is the Euclidean projection onto the simplex (sort-and-threshold, Held et al. 1974 /
Duchi et al. 2008), computed after shifting its argument by its maximum, which Π_Δ ignores:
the unshifted version computed 0/0 — NaN in the update — once the entries of γ Y Yᵀ λ exceeded
~1e16, i.e. for gradient norms ≳ 1e8.5 (1e16 − 1 rounds to 1e16, so no entry passed the
support test). The step is also formed as λ(1 − γρ) − γ((YYᵀλ)_t − min_s (YYᵀλ)_s), again a
shift, and Y Yᵀ is accumulated in float64 (exact products for float32/bf16 Y; float64 Y is
first divided by a power of two), so any finite Y gives a finite, exact update. λ starts
uniform; y starts at the first step's gradients (the tracking recursion from y = g_1, so the
first steps are not shrunk towards a zero start).

Why a matrix method (decision): Y is an average of *past gradient vectors*; Y Yᵀ involves
products g_t(k)ᵀ g_s(l) of gradients from different steps, which no sequence of per-step Gram
matrices determines, and the update itself is Yᵀλ, not a combination of the current gradients.
So MoCo is implemented exactly as a :class:`MatrixMethod` holding Y (T·P numbers in J's
dtype, on J's device) in its state; ``combine_into`` works in column chunks.

Left out (documented): the projection of each y_t onto a ball of radius L_t (the tasks'
Lipschitz constants, unknown in practice and omitted by the authors' code); the decaying rates
β/k^σ, γ/k^σ (pass constant rates); and the reference code's normalisation of every gradient to
the size of its loss and its softmax in place of Π_Δ, which are heuristics outside the paper.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import MatrixMethod

__all__ = ["MoCo", "project_simplex"]


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of ``v`` (1-D, finite or −inf entries) onto the probability simplex.

    Sort-and-threshold (Held et al. 1974; Duchi et al. 2008) after shifting ``v`` by its maximum
    (Π_Δ(v + t·1) = Π_Δ(v)): the largest entry is then 0, so the threshold τ lies in [−1, 0), the
    largest entry always gets mass −τ > 0 and Σ x = 1 − O(ulp) — no 0/0 however large the
    entries are (with entries ~1e16, 1e16 − 1 rounds to 1e16 and the unshifted version found no
    support and returned NaN). Entries more than 1 below the maximum get no mass; they are
    clamped to −2 (which also turns −inf, an overflowed step, into an ordinary entry).
    """
    u = (v - v.max()).clamp(min=-2.0)
    n = u.numel()
    srt, _ = torch.sort(u, descending=True)
    css = torch.cumsum(srt, dim=0) - 1.0
    k = torch.arange(1, n + 1, dtype=u.dtype)
    cond = srt - css / k > 0  # true at k = 1 (srt[0] = 0 > −1), monotone in k
    r = int(cond.nonzero().max()) if bool(cond.any()) else 0  # none only for NaN input
    tau = css[r] / (r + 1)
    x = (u - tau).clamp(min=0.0)
    return x / x.sum()


def _power_of_two_scale(amax: float) -> float:
    """A power of two s with amax/s in [1, 2) (1 for amax = 0): exact to divide by."""
    if not amax > 0:
        return 1.0
    return math.ldexp(1.0, math.frexp(amax)[1] - 1)


class MoCo(MatrixMethod):
    """MoCo (Fernando et al. 2023) with constant rates.

    Args:
        beta: tracking rate β ∈ (0, 1] of the gradient averages (1: no averaging).
        gamma: step size γ > 0 of the weight update.
        rho: ℓ2 regularisation ρ ≥ 0 of the weight update.
        chunk_size: columns of J processed at a time.

    State (in ``state_dict()``): Y (T, P) and λ (T,).
    """

    name = "moco"
    permutation_invariant = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(self, beta: float = 0.5, gamma: float = 0.1, rho: float = 0.0, chunk_size: int = 1 << 16) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and 0.0 < beta <= 1.0):
            raise ValueError(f"beta: must be in (0, 1], got {beta!r}")
        if not (isinstance(gamma, (int, float)) and 0.0 < gamma < float("inf")):
            raise ValueError(f"gamma: must be a positive finite number, got {gamma!r}")
        if not (isinstance(rho, (int, float)) and 0.0 <= rho < float("inf")):
            raise ValueError(f"rho: must be a finite number ≥ 0, got {rho!r}")
        if not (isinstance(chunk_size, int) and chunk_size > 0):
            raise ValueError(f"chunk_size: must be a positive int, got {chunk_size!r}")
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.rho = float(rho)
        self.chunk_size = chunk_size
        self.y: Tensor | None = None
        self.lamda: Tensor | None = None

    @torch.no_grad()
    def combine_into(self, out: Tensor, matrix: Tensor, *, beta: float = 0.0) -> None:
        """Track J, update λ, and write ``beta·out + Yᵀλ`` into ``out``."""
        num_tasks, num_cols = matrix.shape
        self.check_num_tasks(num_tasks)
        if self.y is not None and self.y.shape != matrix.shape:
            raise ValueError(
                f"matrix: MoCo's state has shape {tuple(self.y.shape)}, got {tuple(matrix.shape)}; call reset()"
            )
        first = self.y is None
        if self.y is None:
            self.y = matrix.detach().clone()
            self.lamda = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        self.y = self.y.to(matrix.device)
        # Gram of Y in float64. Products of float32/bf16/fp16 entries are exact in float64 and
        # cannot overflow it; float64 entries can (|y| > 1e154), so Y is then divided by a power
        # of two s first (exact) and G = s² G_s is kept factored.
        wide = self.y.dtype == torch.float64
        if wide and not first:  # tracking first: the scale needs the new Y
            for start in range(0, num_cols, self.chunk_size):
                part = self.y[:, start : start + self.chunk_size]
                part.sub_(self.beta * (part - matrix[:, start : start + self.chunk_size]))
        scale = _power_of_two_scale(float(self.y.abs().max())) if wide and self.y.numel() else 1.0
        gram = torch.zeros(num_tasks, num_tasks, dtype=torch.float64, device=matrix.device)
        for start in range(0, num_cols, self.chunk_size):
            part = self.y[:, start : start + self.chunk_size]
            if not wide and not first:
                part.sub_(self.beta * (part - matrix[:, start : start + self.chunk_size]))
            p64 = part.to(torch.float64) / scale
            gram += p64 @ p64.T
        gram = gram.cpu()
        self._num_tasks = num_tasks
        self.lamda = project_simplex(self._step_point(gram, scale))
        out.addmv_(self.y.T, self.lamda.to(device=matrix.device, dtype=matrix.dtype), beta=beta)

    def _step_point(self, gram_s: Tensor, scale: float) -> Tensor:
        """λ − γ (Y Yᵀ + ρ I) λ with Y Yᵀ = scale² · ``gram_s``, shifted by a constant (which the
        simplex projection ignores) so that it stays finite: entries whose difference to the
        smallest (G λ)_t times γ scale² overflows get −inf, i.e. no mass."""
        lam = self.lamda
        assert lam is not None
        a = gram_s @ lam  # (Y Yᵀ λ) / scale²
        b = lam * (1.0 - min(self.gamma * self.rho, 1e300))
        diff = (a - a.min()) * scale * scale * self.gamma  # ≥ 0; may overflow to inf
        return b - diff

    def reset(self) -> None:
        """Forget Y and λ."""
        super().reset()
        self.y = None
        self.lamda = None

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "y": self.y, "lamda": self.lamda}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.y = None if state["y"] is None else state["y"].clone()
        self.lamda = None if state["lamda"] is None else state["lamda"].clone()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, rho={self.rho}"
