"""``sum`` (gradsurg/methods/sum.py) vs. its textbook oracle on the named families.

Tolerance 1e-12·scale (scale = T·max‖g_t‖): a handful of float64 additions.
"""

from __future__ import annotations

import pytest
from _assertions import close, lib_weights
from _families import FAMILIES, TS, make_family, scale_of
from textbook.sum import sum_


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_sum(family, T):
    J = make_family(family, T)
    close(lib_weights("sum", J) @ J, sum_(J), 1e-12 * scale_of(J))
