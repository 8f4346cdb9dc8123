"""Oracle of ``imtl_g``: the paper's closed form and the equal-projection definition."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._util import as_f64


def imtl_g_alpha(J: Tensor) -> Tensor:
    """IMTL-G scaling factors, Liu et al. 2021, "Towards Impartial Multi-task Learning"
    (ICLR 2021), Section 3.2 / Algorithm 1, closed form for the gradient part:

        u_t = g_t / ‖g_t‖,
        D = [g_1 − g_2; …; g_1 − g_T]   ((T−1) × P, one row per difference),
        U = [u_1 − u_2; …; u_1 − u_T]   ((T−1) × P),
        α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹,   α_1 = 1 − Σ_{t≥2} α_t.

    Then g = Σ_t α_t g_t has g · u_1 = g · u_t for every t. Defined only when every g_t is
    nonzero and D Uᵀ is invertible (e.g. linearly independent gradients); raises otherwise.
    T = 1 gives α = [1].
    """
    J = as_f64(J)
    T = J.shape[0]
    if T == 1:
        return torch.ones(1, dtype=torch.float64)
    norms = torch.linalg.vector_norm(J, dim=1)
    if bool((norms == 0).any()):
        raise ValueError("IMTL-G closed form needs nonzero gradients")
    U_vec = J / norms[:, None]
    D = J[0][None, :] - J[1:]
    U = U_vec[0][None, :] - U_vec[1:]
    DU = D @ U.T
    # Solve α DU = g_1 Uᵀ, i.e. DUᵀ αᵀ = U g_1.
    alpha_rest = torch.linalg.solve(DU.T, U @ J[0])
    return torch.cat([(1 - alpha_rest.sum()).reshape(1), alpha_rest])


def imtl_g(J: Tensor) -> Tensor:
    """IMTL-G combined gradient Σ_t α_t g_t (see :func:`imtl_g_alpha`)."""
    J = as_f64(J)
    return imtl_g_alpha(J) @ J


def imtl_g_by_definition(J: Tensor, tol: float = 1e-9) -> Tensor | None:
    """IMTL-G straight from its definition (Liu et al. 2021, ICLR, Sec. 3.2): weights α with
    Σ_t α_t = 1 such that g = Σ_t α_t g_t has the same projection k on every unit gradient
    u_t = g_t/‖g_t‖ (zero gradients have no u_t and impose nothing).

    Unknowns (α, k); equations (u_t · g_s)_ts α − k 1 = 0 and 1ᵀα = 1, solved by least squares
    on max-norm-1 data. Returns the minimum-norm α if the system is consistent (residual ≤ tol),
    else ``None`` (no such α exists, e.g. g_3 the midpoint of independent g_1, g_2). Unlike the
    closed form of :func:`imtl_g_alpha` it also covers dependent gradients, where α need not be
    unique (the returned one is the min-norm solution).
    """
    J = as_f64(J)
    T = J.shape[0]
    top = float(torch.linalg.vector_norm(J, dim=1).max())
    Jn = (J / top).numpy() if top > 0 else J.numpy()
    norms = np.linalg.norm(Jn, axis=1)
    nz = norms > 0
    U = Jn[nz] / norms[nz, None]
    m = int(nz.sum())
    A = np.zeros((m + 1, T + 1))
    A[:m, :T] = U @ Jn.T
    A[:m, T] = -1.0
    A[m, :T] = 1.0
    b = np.zeros(m + 1)
    b[m] = 1.0
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    if np.linalg.norm(A @ sol - b) > tol:
        return None
    return torch.from_numpy(sol[:T])
