"""``cr_mogm`` (gradsurg/methods/cr_mogm.py): the averaged update vs. the textbook exponential
average over explicit vectors (base weights from the textbook MGDA), the limits α = 0 and 1, the
base option (name, options, instance, losses), state with a stateful base, argument checks,
GradSurgery path."""

from __future__ import annotations

import copy

import pytest
import torch
from _families import gram, make_family, scale_of
from _models import check_end_to_end
from textbook.cr_mogm import cr_mogm
from textbook.mgda import mgda_weights

import gradsurg
from gradsurg.methods.cr_mogm import CRMOGM

F64 = torch.float64


def _sequence(family: str, T: int, n: int = 4):
    # full row rank and varying angles: MGDA's weights are unique, so the average is defined
    return [make_family(family, T, extra=e) + 0.3 * make_family("random", T, extra=10 + e) for e in range(n)]


@pytest.mark.parametrize("family", ["random", "conflicting", "orthogonal"])
@pytest.mark.parametrize("T", [1, 2, 3, 5])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
def test_matches_textbook_with_mgda(family, T, alpha):
    Js = _sequence(family, T)
    m = CRMOGM(alpha=alpha)
    for step, (J, want) in enumerate(zip(Js, cr_mogm(Js, mgda_weights, alpha))):
        got = m.weights(gram(J)) @ J
        torch.testing.assert_close(got, want, rtol=0.0, atol=1e-8 * scale_of(J),
                                   msg=lambda msg, step=step: f"step {step}\n{msg}")


def test_alpha_limits():
    Js = _sequence("random", 3)
    zero, one, mgda = CRMOGM(alpha=0.0), CRMOGM(alpha=1.0), gradsurg.get_method("mgda")
    first = None
    for J in Js:
        w0, w1, wm = zero.weights(gram(J)), one.weights(gram(J)), mgda.weights(gram(J))
        assert torch.equal(w0, wm)  # α = 0: the base method
        first = wm if first is None else first
        assert torch.equal(w1, first)  # α = 1: frozen at the first step's weights


def test_base_by_name_options_and_instance():
    J = make_family("conflicting", 4)
    by_name = CRMOGM(base="cagrad", base_options={"c": 0.7})
    by_instance = CRMOGM(base=gradsurg.get_method("cagrad", c=0.7))
    assert by_name.base.c == 0.7
    assert torch.equal(by_name.weights(gram(J)), by_instance.weights(gram(J)))
    # the first step is the base method's
    assert torch.equal(CRMOGM(base="upgrad").weights(gram(J)), gradsurg.get_method("upgrad").weights(gram(J)))


def test_base_needing_losses():
    m = CRMOGM(base="db_mtl", alpha=0.5)
    assert m.needs_losses
    J = make_family("random", 3)
    L = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    torch.testing.assert_close(m.weights(gram(J), losses=L), gradsurg.get_method("db_mtl").weights(gram(J), losses=L))
    with pytest.raises(ValueError, match=r"^losses: "):
        m.weights(gram(J))


def test_stateful_base_state_round_trip_and_reset():
    Js = _sequence("random", 3, n=5)
    a = CRMOGM(base="pcgrad", alpha=0.6)
    for J in Js[:2]:
        a.weights(gram(J))
    state = copy.deepcopy(a.state_dict())
    assert any(k.startswith("base.") for k in state)  # the base's generator travels with it
    b = CRMOGM(base="pcgrad", alpha=0.6)
    b.load_state_dict(state)
    for J in Js[2:]:
        assert torch.equal(a.weights(gram(J)), b.weights(gram(J)))
    a.reset()  # the average and the base's generator start over
    assert torch.equal(a.weights(gram(Js[0])), CRMOGM(base="pcgrad", alpha=0.6).weights(gram(Js[0])))


def test_alpha_schedule_and_task_count():
    Js = _sequence("random", 3)
    m = CRMOGM(alpha=0.0)
    w = m.weights(gram(Js[0]))
    m.alpha = 0.5  # a schedule, as the paper's α_k → 1
    fresh = gradsurg.get_method("mgda").weights(gram(Js[1]))
    torch.testing.assert_close(m.weights(gram(Js[1])), 0.5 * w + 0.5 * fresh, rtol=0.0, atol=1e-15)
    m.alpha = 1.5
    with pytest.raises(ValueError, match=r"^alpha: "):
        m.weights(gram(Js[2]))
    m.alpha = 0.5
    with pytest.raises(ValueError, match=r"^losses: "):
        m.weights(gram(make_family("random", 4)))


@pytest.mark.parametrize(
    "kwargs, argname",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": 1.1}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"base": "nope"}, "base"),
        ({"base": "uw"}, "base"),
        ({"base": "graddrop"}, "base"),
        ({"base": 3}, "base"),
        ({"base": "cagrad", "base_options": {"nope": 1}}, "base_options"),
        ({"base": "cagrad", "base_options": [("c", 1)]}, "base_options"),
        ({"base": gradsurg.get_method("mgda"), "base_options": {"c": 1}}, "base_options"),
    ],
)
def test_bad_constructor_arguments(kwargs, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        gradsurg.get_method("cr_mogm", **kwargs)


def test_end_to_end_gradsurgery():
    def expected(Js, Ls, method):
        return cr_mogm(Js, mgda_weights, 0.9)[-1], 1e-8 * scale_of(Js[-1])

    check_end_to_end("cr_mogm", expected)
