"""Oracle of ``excess_mtl``: He et al. 2024, excess-risk weights by exponentiated gradient."""

from __future__ import annotations

import numpy as np

from ._util import as_np as _np


def excess_mtl(Js, eta: float, warmup: int, eps: float = 1e-7) -> list[np.ndarray]:
    """He et al. 2024: AdaGrad diagonal Hessian, E_t = Σ_k g²/√(S+ε), α ← α·exp(η E/E⁰)
    normalised, uniform α during the warm-up whose mean E is E⁰. Returns the updates Σ α_t g_t."""
    S = None
    alpha = None
    wsum = None
    base = None
    out = []
    for step, J in enumerate(Js):
        J = _np(J)
        T = J.shape[0]
        if S is None:
            S = np.zeros_like(J)
            alpha = np.full(T, 1.0 / T)
            wsum = np.zeros(T)
        S = S + J * J
        E = np.array([np.sum(J[t] ** 2 / np.sqrt(S[t] + eps)) for t in range(T)])
        if step < warmup:
            wsum = wsum + E
        else:
            if base is None:
                base = wsum / warmup if warmup > 0 else E.copy()
            a = alpha * np.exp(eta * E / (base + eps))
            alpha = a / a.sum()
        out.append(J.T @ alpha)
    return out
