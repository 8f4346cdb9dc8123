"""``dualproj`` (gradsurg/methods/dualproj.py) vs. the textbook DualProj (the mean projected onto
the dual cone by active-set enumeration in parameter space).

Tolerance 1e-8·scale (scale = T·max‖g_t‖), for the reasons given in test_upgrad.py (the same
solver and oracle).
"""

from __future__ import annotations

import pytest
from _assertions import close_np, lib_update
from _families import FAMILIES, TS, make_family, scale_of
from textbook.dualproj import dualproj

from gradsurg.methods.dualproj import DualProj, dualproj_weights


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
def test_dualproj_textbook(family, T):
    J = make_family(family, T).numpy()
    close_np(lib_update(dualproj_weights, J), dualproj(J), 1e-8 * scale_of(J), f"{family} T={T}")


def test_argument_validation():
    with pytest.raises(ValueError, match=r"^reg_eps:"):
        DualProj(reg_eps=-1e-3)
