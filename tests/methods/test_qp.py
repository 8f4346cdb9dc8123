"""The dual-cone NNLS solver (gradsurg/methods/_qp.py) vs. scipy's NNLS on the explicit factor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _assertions import close_np
from scipy.optimize import nnls

from gradsurg.methods._qp import nonneg_qp

F64 = torch.float64


@pytest.mark.parametrize("T", [16, 40, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_qp_solver_large_t_vs_scipy_nnls(T, seed):
    """The Gram-space Lawson–Hanson solver vs. scipy's NNLS on the explicit factor J
    (min_{z ≥ 0} ‖Jᵀ(u + z)‖), for T up to the supported 64, rank-deficient J, row norms spanning
    1e-3 … 1e3, a zero and a duplicated row. Compared on the projections Jᵀ(u + z) (z itself is
    not unique when G is singular): 1e-9 relative to ‖g‖ — both exact active-set methods; the
    Gram side squares the conditioning (Jacobi-scaled), measured errors are ≤ 1e-12."""
    rng = np.random.default_rng(seed)
    P, r = T + 5, max(2, T // 2)
    J = rng.standard_normal((T, r)) @ rng.standard_normal((r, P))
    J *= 10.0 ** rng.uniform(-3, 3, size=(T, 1))
    J[3] = 0.0
    J[1] = J[0]
    Jt = torch.from_numpy(J)
    G = Jt @ Jt.T
    norms = np.linalg.norm(J, axis=1)
    for k in (0, 2, T - 1):
        u = torch.zeros(T, dtype=F64)
        u[k] = 1.0
        z = nonneg_qp(G, G @ u)
        assert bool((z >= 0).all())
        x = ((u + z) @ Jt).numpy()
        zr, _ = nnls(J.T, -J[k], maxiter=100 * T)
        xr = J.T @ (u.numpy() + zr)
        close_np(x, xr, 1e-9 * norms[k], f"T={T} k={k}")
        # In the dual cone: every task's cosine with x is ≥ −1e-12.
        live = norms > 0
        if np.linalg.norm(x) > 1e-12 * norms[k]:
            assert np.all((J[live] @ x) / norms[live] >= -1e-12 * np.linalg.norm(x))
