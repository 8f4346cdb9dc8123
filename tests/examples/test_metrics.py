"""The example's metrics against values computed by hand."""

from __future__ import annotations

import math

import _helpers  # noqa: F401
import pytest

from examples.mtl import metrics


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_rouge_hand_computed():
    pytest.importorskip(
        "rouge_score", reason="transformers/peft/datasets/rouge-score not installed"
    )
    # Pair 1 — reference "the cat sat on the mat", prediction "the cat lay on the mat"
    # (6 tokens each; stemming changes none of these words into another's stem).
    #   unigrams: clipped overlap the×2, cat, on, mat = 5        -> P = R = 5/6
    #   bigrams:  ref {the-cat, cat-sat, sat-on, on-the, the-mat},
    #             pred {the-cat, cat-lay, lay-on, on-the, the-mat}: overlap 3 of 5 -> 3/5
    #   LCS:      "the cat on the mat" = 5                        -> P = R = 5/6
    # Pair 2 — reference "the cat sat", prediction "the cat":
    #   unigrams: overlap 2, P = 2/2, R = 2/3; bigrams: overlap 1, P = 1/1, R = 1/2; LCS = 2 as unigrams.
    preds = ["the cat lay on the mat", "the cat"]
    refs = ["the cat sat on the mat", "the cat sat"]
    r1 = (_f1(5 / 6, 5 / 6) + _f1(1.0, 2 / 3)) / 2
    r2 = (_f1(3 / 5, 3 / 5) + _f1(1.0, 1 / 2)) / 2
    rl = (_f1(5 / 6, 5 / 6) + _f1(1.0, 2 / 3)) / 2
    got = metrics.rouge(preds, refs)
    assert got["rouge1"] == pytest.approx(r1, abs=1e-9)
    assert got["rouge2"] == pytest.approx(r2, abs=1e-9)
    assert got["rougeL"] == pytest.approx(rl, abs=1e-9)
    # Values spelled out: (5/6 + 0.8)/2, (0.6 + 2/3)/2.
    assert got["rouge1"] == pytest.approx((5 / 6 + 0.8) / 2)
    assert got["rouge2"] == pytest.approx((0.6 + 2 / 3) / 2)


def test_rouge_disjoint_and_identical():
    pytest.importorskip(
        "rouge_score", reason="transformers/peft/datasets/rouge-score not installed"
    )
    assert metrics.rouge(["dog barks"], ["cat sleeps"]) == {
        "rouge1": 0.0,
        "rouge2": 0.0,
        "rougeL": 0.0,
    }
    assert metrics.rouge(["a b c"], ["a b c"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}


def test_classification_metrics_hand_computed():
    preds = [1, 1, 0, 0, 1, 0, 1, 1]
    labels = [1, 0, 0, 1, 1, 0, 1, 0]
    # TP = 3 (idx 0, 4, 6), FP = 2 (idx 1, 7), TN = 2 (idx 2, 5), FN = 1 (idx 3)
    assert metrics.accuracy(preds, labels) == pytest.approx(5 / 8)
    assert metrics.binary_f1(preds, labels) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # 6/9
    mcc = (3 * 2 - 2 * 1) / math.sqrt((3 + 2) * (3 + 1) * (2 + 2) * (2 + 1))  # 4/sqrt(240)
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(mcc)
    assert metrics.classification_metrics("mrpc", preds, labels) == pytest.approx(
        {"accuracy": 5 / 8, "f1": 2 / 3}
    )
    assert metrics.classification_metrics("cola", preds, labels) == pytest.approx(
        {"accuracy": 5 / 8, "mcc": mcc}
    )
    assert set(metrics.classification_metrics("sst2", preds, labels)) == {"accuracy"}


def test_classification_degenerate_cases():
    assert metrics.matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0  # undefined -> 0
    assert metrics.binary_f1([0, 0], [0, 0]) == 0.0
    assert metrics.matthews_corrcoef([1, 0], [1, 0]) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([0, 1], [1, 0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="length"):
        metrics.accuracy([1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])
