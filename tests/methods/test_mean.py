"""``mean`` (gradsurg/methods/mean.py) vs. its textbook oracle on the named families.

Tolerance 1e-12·scale (scale = T·max‖g_t‖): a handful of float64 additions.
"""

from __future__ import annotations

import pytest
from _assertions import close, lib_weights
from _families import FAMILIES, TS, make_family, scale_of
from textbook.mean import mean


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_mean(family, T):
    J = make_family(family, T)
    close(lib_weights("mean", J) @ J, mean(J), 1e-12 * scale_of(J))
