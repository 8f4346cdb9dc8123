"""The named families of _families.py are what their names say."""

from __future__ import annotations

import pytest
import torch
from _families import FAMILIES, TS, gram, make_family, num_params

F64 = torch.float64


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_family_shapes(family, T):
    J = make_family(family, T)
    assert J.shape == (T, num_params(T)) and J.dtype == F64
    if family == "conflicting" and T >= 2:
        off = gram(J)[~torch.eye(T, dtype=torch.bool)]
        assert (off < 0).all()
    if family == "orthogonal":
        off = gram(J)[~torch.eye(T, dtype=torch.bool)]
        assert off.abs().max() < 1e-12 if T > 1 else True
