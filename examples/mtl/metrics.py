"""Evaluation metrics: accuracy, binary F1, Matthews correlation and ROUGE-1/2/L F1.

The classification metrics are written out here (a few lines each, no scikit-learn needed);
ROUGE comes from Google's ``rouge-score`` package with the Porter stemmer on, as in most
summarization papers. All values are fractions in [0, 1] (the printed table shows percent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["accuracy", "binary_f1", "classification_metrics", "matthews_corrcoef", "rouge"]


def _check_pair(preds: Sequence[int], labels: Sequence[int]) -> None:
    if len(preds) != len(labels):
        raise ValueError(f"preds and labels differ in length: {len(preds)} vs {len(labels)}")
    if len(preds) == 0:
        raise ValueError("preds: empty, nothing to evaluate")


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to the label."""
    _check_pair(preds, labels)
    return sum(int(p) == int(y) for p, y in zip(preds, labels)) / len(labels)


def binary_f1(preds: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the ``positive`` class (GLUE's MRPC/QQP F1); 0 when there is no true positive."""
    _check_pair(preds, labels)
    tp = sum(int(p) == positive and int(y) == positive for p, y in zip(preds, labels))
    fp = sum(int(p) == positive and int(y) != positive for p, y in zip(preds, labels))
    fn = sum(int(p) != positive and int(y) == positive for p, y in zip(preds, labels))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation of binary predictions (GLUE's CoLA metric); 0 when undefined.

    MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)), with label 1 as positive.
    """
    _check_pair(preds, labels)
    tp = tn = fp = fn = 0
    for p, y in zip(preds, labels):
        p, y = int(p) == 1, int(y) == 1
        tp += p and y
        tn += (not p) and (not y)
        fp += p and not y
        fn += (not p) and y
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def classification_metrics(
    task: str, preds: Sequence[int], labels: Sequence[int]
) -> dict[str, float]:
    """The GLUE metrics of ``task``: accuracy always, plus F1 (mrpc, qqp) or MCC (cola)."""
    out = {"accuracy": accuracy(preds, labels)}
    if task in ("mrpc", "qqp"):
        out["f1"] = binary_f1(preds, labels)
    if task == "cola":
        out["mcc"] = matthews_corrcoef(preds, labels)
    return out


def rouge(
    predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True
) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 over the pairs (``rouge-score``, stemming on).

    Returns ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}`` as fractions in [0, 1].
    """
    from rouge_score import rouge_scorer

    _check_pair(predictions, references)
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=use_stemmer)
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # score(target, prediction)
        for k in keys:
            totals[k] += scores[k].fmeasure
    return {k: v / len(predictions) for k, v in totals.items()}
