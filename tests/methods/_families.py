"""Task-gradient matrices J (T × P, float64) for the method tests: named deterministic families
and hypothesis strategies.

Families (``make_family``): random, conflicting (pairwise obtuse), aligned (positive multiples of
one vector), orthogonal, one_zero (one zero gradient), duplicated (two identical gradients) and
dependent (g_T = g_1 + g_2, or g_2 = −g_1 for T = 2), P = 12 + 4T, rows scaled by factors in
[0.3, 3].

Strategies:

* :func:`int_jacobians` — small integers / 10 (so exact zeros, duplicates, opposite and
  proportional rows come up naturally), then rows may be replaced by zero / copies / negated /
  positive multiples of earlier rows, and everything is multiplied by 10^e.
* :func:`gaussian_jacobians` — seeded standard normal rows with per-row scales, one degenerate
  kind (zero row, duplicate, negated, low rank, all zero) and a log-uniform common scale; with
  ``max_extra_p=None`` P may be smaller than T (rank-deficient, T > P).
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import torch
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

F64 = torch.float64
TS = [1, 2, 3, 5, 8]
FAMILIES = ["random", "conflicting", "aligned", "orthogonal", "one_zero", "duplicated", "dependent"]


def _seed(family: str, T: int, extra: int = 0) -> int:
    return 1000 * FAMILIES.index(family) + 10 * T + extra


def num_params(T: int) -> int:
    return 12 + 4 * T  # 16 … 44


def make_family(family: str, T: int, extra: int = 0) -> torch.Tensor:
    """A (T, P) float64 matrix of per-task gradients of the named family (deterministic)."""
    P = num_params(T)
    rng = np.random.default_rng(_seed(family, T, extra))
    scales = rng.uniform(0.3, 3.0, size=T)
    if family == "random":
        J = rng.standard_normal((T, P))
    elif family == "conflicting":
        # Pairwise obtuse: centred simplex vertices e_i − 1/T (pairwise dot −1/T) in a random
        # T-dim subspace, positive scales, plus noise orthogonal to that subspace so the set is
        # linearly independent (0 is then not exactly in the convex hull). T=1: a lone vector.
        if T == 1:
            J = rng.standard_normal((1, P))
        else:
            while True:
                Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
                basis, rest = Q[:, :T], Q[:, T:]
                simplex = np.eye(T) - 1.0 / T
                s = rng.uniform(1.0, 2.0, size=T)
                noise = 0.1 * rng.standard_normal((T, P - T)) @ rest.T
                J = (s[:, None] * simplex) @ basis.T + noise
                dots = J @ J.T
                if np.all(dots[~np.eye(T, dtype=bool)] < -1e-3):
                    break
        return torch.from_numpy(J)
    elif family == "aligned":
        v = rng.standard_normal(P)
        J = np.outer(np.ones(T), v)
    elif family == "orthogonal":
        Q, _ = np.linalg.qr(rng.standard_normal((P, T)))
        J = Q.T.copy()
    elif family == "one_zero":
        J = rng.standard_normal((T, P))
        J[T // 2] = 0.0
    elif family == "duplicated":
        J = rng.standard_normal((T, P))
        if T >= 2:
            J[T - 1] = J[0]
        scales[T - 1] = scales[0]  # the row scales below must keep the duplicate identical
    elif family == "dependent":
        # Linearly dependent but pairwise distinct: the last gradient is g_1 + g_2 (T ≥ 3) or
        # −g_1 (T = 2). Scales are applied before the dependency is built.
        J = scales[:, None] * rng.standard_normal((T, P))
        if T == 2:
            J[1] = -J[0]
        elif T >= 3:
            J[T - 1] = J[0] + J[1]
        return torch.from_numpy(J)
    else:
        raise ValueError(family)
    return torch.from_numpy(scales[:, None] * J)


def gram(J: torch.Tensor) -> torch.Tensor:
    return J @ J.T


def nmax(J) -> float:
    """Largest row norm (tensor or array)."""
    J = torch.as_tensor(J)
    return float(torch.linalg.vector_norm(J, dim=1).max()) if J.numel() else 0.0


def scale_of(J) -> float:
    """T · max_t ‖g_t‖: a bound on the size of the combined updates (floored at 1e-300)."""
    return max(J.shape[0] * nmax(J), 1e-300)


def well_conditioned(J: torch.Tensor, bound: float = 1e6) -> bool:
    ev = torch.linalg.eigvalsh(gram(J))
    return bool(ev[0] > 0) and float(ev[-1] / ev[0]) < bound


def random_order(T: int, seed: int) -> torch.Tensor:
    """A (T, T) per-task visiting order (PCGrad / GradVac), seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(T, generator=g) for _ in range(T)]).to(torch.int64)


def all_orders(T: int):
    """Every assignment of a visiting order (over the other tasks) to each task."""
    per_task = []
    for i in range(T):
        others = [j for j in range(T) if j != i]
        per_task.append([[*list(p), i] for p in itertools.permutations(others)])
    for combo in itertools.product(*per_task):
        yield torch.tensor(combo, dtype=torch.int64)


@st.composite
def int_jacobians(draw, min_T: int = 1, max_T: int = 8, max_P: int = 12, scale: bool = True, max_exp: int = 8):
    T = draw(st.integers(min_T, max_T))
    P = draw(st.integers(1, max_P))
    ints = draw(hnp.arrays(np.int64, (T, P), elements=st.integers(-20, 20)))
    J = ints.astype(np.float64) / 10.0
    # Degenerate rows, each defined from an earlier row.
    for t in range(T):
        kind = draw(st.sampled_from(["keep", "keep", "keep", "zero", "dup", "neg", "multiple"]))
        if kind == "zero":
            J[t] = 0.0
        elif kind != "keep" and t > 0:
            src = draw(st.integers(0, t - 1))
            if kind == "dup":
                J[t] = J[src]
            elif kind == "neg":
                J[t] = -J[src]
            else:
                J[t] = draw(st.sampled_from([0.5, 2.0, 3.0, 7.0])) * J[src]
    if scale:
        J = J * 10.0 ** draw(st.integers(-max_exp, max_exp))
    return torch.from_numpy(J)


GAUSSIAN_KINDS = ["random", "zero_row", "duplicate", "negated", "low_rank", "all_zero"]


@st.composite
def gaussian_jacobians(draw, max_t: int = 6, min_t: int = 1, max_extra_p: int | None = 6,
                       kinds=tuple(GAUSSIAN_KINDS), log_scale: float = 6.0):
    """numpy (T, P) arrays; P ∈ [T, T + max_extra_p], or P ∈ [1, T + 6] when max_extra_p is None."""
    T = draw(st.integers(min_t, max_t))
    P = draw(st.integers(T, T + max_extra_p)) if max_extra_p is not None else draw(st.integers(1, T + 6))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(list(kinds)))
    exponent = draw(st.floats(-log_scale, log_scale)) if log_scale else 0.0
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((T, P)) * rng.uniform(0.2, 5.0, size=(T, 1))
    if kind == "zero_row":
        J[rng.integers(T)] = 0.0
    elif kind == "duplicate" and T >= 2:
        J[1] = J[0]
    elif kind == "negated" and T >= 2:
        J[1] = -J[0]
    elif kind == "low_rank" and T >= 3:
        J = rng.standard_normal((T, 2)) @ rng.standard_normal((2, P))
    elif kind == "all_zero":
        J[:] = 0.0
    return J * 10.0**exponent


# Hypothesis settings shared by the property tests. Multiply every max_examples for a longer soak
# run, e.g. GRADSURG_HYPOTHESIS_SCALE=20.
_SCALE = int(os.environ.get("GRADSURG_HYPOTHESIS_SCALE", "1"))
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


def examples(n: int) -> int:
    return n * _SCALE
