"""``aligned_mtl``: Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for
Multi-Task Learning", CVPR, Algorithm 1).

Aligned-MTL makes the linear system of the task gradients perfectly conditioned before combining
them. With the thin SVD J = U Σ Vᵀ (rank r), the aligned gradients are Ĵ = σ U Vᵀ: every singular
value is replaced by one common scale σ (condition number 1). Since G = J Jᵀ = U Σ² Uᵀ, the
transform is a T×T matrix acting on J,

    Ĵ = B J,   B = σ · U Σ⁻¹ Uᵀ   (G = U Λ Uᵀ, Σ = Λ^{1/2}, over the r positive eigenvalues),

and the update is pᵀ Ĵ = (Bᵀ p)ᵀ J, i.e. weights w = B p (B is symmetric) for the preference p.

Options (as in TorchJD's ``AlignedMTL``):

* ``scale_mode``: ``"min"`` (the paper: σ = σ_min, the smallest non-zero singular value,
  i.e. √λ_min), ``"median"`` (σ = √ of the median eigenvalue; for an even rank, the lower median,
  as ``torch.median``), ``"rmse"`` (σ = √ of the mean eigenvalue, the RMS singular value, as in
  the authors' code).
* ``pref``: ``"mean"`` (p = 1/T, TorchJD's default) or ``"sum"`` (p = 1, as ``alpha = B.sum(0)``
  in the authors' and LibMTL's code). The two differ by the factor T only.

Rank: eigenvalues λ ≤ 1e3 · T · eps64 · λ_max are treated as zero (TorchJD uses T · eps of the
dtype, the authors' code T · eps of float32). Below ~1e3·eps the eigenvalues of a computed G are
rounding noise (duplicated gradients give λ ~ eps·λ_max), so a smaller cut-off would invert noise.
Matrices whose σ_min/σ_max lies between the cut-offs (≈ 1e-6.5 … 1e-8) are ranked differently.
If G = 0 the weights are p (the update is zero anyway).

Aligned-MTL is positively homogeneous (scaling the gradients by s scales the update by s) and
equivariant under relabelling of the tasks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GramMethod

__all__ = ["AlignedMTL", "aligned_mtl_weights"]

_EPS = float(torch.finfo(torch.float64).eps)
_SCALE_MODES = ("min", "median", "rmse")
_PREFS = ("mean", "sum")


def aligned_mtl_weights(gram: Tensor, scale_mode: str = "min", pref: str = "mean") -> Tensor:
    """Aligned-MTL weights ``w = B p`` (float64, ``(T,)``)."""
    num_tasks = gram.shape[0]
    p = torch.full((num_tasks,), 1.0 / num_tasks if pref == "mean" else 1.0, dtype=gram.dtype)
    lam, vecs = torch.linalg.eigh(gram)
    top = float(lam.max())
    if not top > 0:
        return p
    keep = lam > 1e3 * num_tasks * _EPS * top
    lam, vecs = lam[keep], vecs[:, keep]
    if scale_mode == "min":
        scale = lam.min()
    elif scale_mode == "median":
        scale = torch.median(lam)
    else:
        scale = lam.mean()
    b = scale.sqrt() * (vecs / lam.sqrt()) @ vecs.T
    return b @ p


class AlignedMTL(GramMethod):
    """Aligned-MTL (Senushkin et al. 2023): the task gradients with all singular values set to
    one scale, combined with the preference ``pref``.

    Args:
        scale_mode: ``"min"`` (default, the paper), ``"median"`` or ``"rmse"``.
        pref: ``"mean"`` (default, TorchJD) or ``"sum"`` (the authors' code).
    """

    name = "aligned_mtl"
    permutation_invariant = positively_homogeneous = True

    def __init__(self, scale_mode: str = "min", pref: str = "mean") -> None:
        super().__init__()
        if scale_mode not in _SCALE_MODES:
            raise ValueError(f"scale_mode: must be one of {_SCALE_MODES}, got {scale_mode!r}")
        if pref not in _PREFS:
            raise ValueError(f"pref: must be one of {_PREFS}, got {pref!r}")
        self.scale_mode = scale_mode
        self.pref = pref

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        return aligned_mtl_weights(gram, self.scale_mode, self.pref)

    def extra_repr(self) -> str:
        return f"scale_mode={self.scale_mode!r}, pref={self.pref!r}"
