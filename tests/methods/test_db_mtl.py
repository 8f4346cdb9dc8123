"""``db_mtl`` (gradsurg/methods/db_mtl.py) vs. the textbook DB-MTL (norm-EMA form on explicit
vectors), its balancing properties and its loss checks.

Tolerance 1e-11·scale·max_t(1/L_t)·max_s m_s/min_t m_t (scale = T·max‖g_t‖): closed form; the
weights amplify rounding by up to (1/L_t)(max m / m_t).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _assertions import close
from _families import TS, make_family, scale_of
from _models import check_end_to_end
from textbook.db_mtl import db_mtl

import gradsurg
from gradsurg.methods.db_mtl import db_mtl_weights

F64 = torch.float64
FAMILIES = ["random", "conflicting", "aligned", "one_zero", "duplicated"]


def _loss_seq(T: int, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.05, 5.0, size=T) for _ in range(steps)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_db_mtl_vs_textbook(family, T, beta):
    Js = [make_family(family, T, extra=e) for e in range(3)]
    Ls = _loss_seq(T, 3, T)
    method = gradsurg.get_method("db_mtl", beta=beta)
    expected = db_mtl(Js, Ls, beta)
    for step, (J, L, d) in enumerate(zip(Js, Ls, expected)):
        w = method.weights(J @ J.T, losses=torch.from_numpy(L))
        m = method.ema
        live = m > 0
        amp = float((1.0 / L).max()) * (float(m.max() / m[live].min()) if live.any() else 1.0)
        close(w @ J, d, 1e-11 * scale_of(J) * amp, f"{family} T={T} beta={beta} step={step}")


def test_db_mtl_balances_magnitudes_and_loss_scale():
    J = make_family("random", 3)
    L = torch.tensor([0.5, 2.0, 4.0], dtype=F64)
    w, _ = db_mtl_weights(J @ J.T, L, None, 0.0)
    scaled = w[:, None] * J  # every task's contribution has the largest log-gradient norm
    norms = torch.linalg.vector_norm(scaled, dim=1)
    top = float((torch.linalg.vector_norm(J, dim=1) / L).max())
    torch.testing.assert_close(norms, torch.full((3,), top, dtype=F64), rtol=1e-13, atol=0.0)
    # Multiplying L_t and g_t by c leaves the update unchanged (loss-scale invariance).
    c = torch.tensor([10.0, 0.1, 3.0], dtype=F64)
    w2, _ = db_mtl_weights((c[:, None] * J) @ (c[:, None] * J).T, c * L, None, 0.0)
    torch.testing.assert_close(w2 @ (c[:, None] * J), w @ J, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("kwargs", [{"beta": 1.0}, {"beta": -0.5}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=r"^beta: "):
        gradsurg.get_method("db_mtl", **kwargs)


@pytest.mark.parametrize("losses", [[1.0, 0.0, 2.0], [1.0, -1.0, 2.0], [1.0, float("nan"), 2.0]])
def test_db_mtl_bad_losses(losses):
    J = make_family("random", 3)
    with pytest.raises(ValueError, match=r"^losses: "):
        gradsurg.get_method("db_mtl").weights(J @ J.T, losses=torch.tensor(losses, dtype=F64))
    with pytest.raises(ValueError, match=r"^losses: "):
        gradsurg.get_method("db_mtl").weights(J @ J.T)


def test_end_to_end():
    def expected(Js, Ls, method):
        L = Ls[-1]
        return db_mtl(Js, Ls, 0.9)[-1], 1e-10 * scale_of(Js[-1]) * float((1 / L).max()) * 10

    check_end_to_end("db_mtl", expected)
