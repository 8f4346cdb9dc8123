"""``aligned_mtl`` (gradsurg/methods/aligned_mtl.py) vs. the textbook Aligned-MTL (thin SVD of
the explicit J).

Tolerance 1e-9·scale (scale = T·max‖g_t‖): eigendecomposition of G vs. SVD of J; B multiplies
by σ_min/σ_i ≤ 1, eigenvectors of clustered eigenvalues only matter through the (exactly
representable) span.
"""

from __future__ import annotations

import pytest
from _assertions import close_np, lib_update
from _families import FAMILIES, TS, make_family, scale_of
from textbook.aligned_mtl import aligned_mtl

from gradsurg.methods.aligned_mtl import AlignedMTL, aligned_mtl_weights


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
def test_aligned_mtl_textbook(family, T, mode):
    J = make_family(family, T).numpy()
    for pref in ("mean", "sum"):
        got = lib_update(aligned_mtl_weights, J, scale_mode=mode, pref=pref)
        close_np(got, aligned_mtl(J, mode, pref), 1e-9 * scale_of(J), f"{family} T={T} {pref}")


@pytest.mark.parametrize("kwargs, arg", [({"scale_mode": "max"}, "scale_mode"), ({"pref": "median"}, "pref")])
def test_argument_validation(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}:"):
        AlignedMTL(**kwargs)
