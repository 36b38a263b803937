"""Task metrics (accuracy, binary F1, Matthews correlation), computed from confusion matrices.

Every metric is defined on a confusion matrix `counts[..., gold, predicted]` so that calibration can score
thousands of routings at once: a stack of matrices (one per deferral count) goes through in one vectorised
call. The label-array forms (`accuracy(gold, predicted)` ...) are thin wrappers for everyday use.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

METRICS = ("accuracy", "f1", "mcc")


def confusion(gold, predicted, num_classes: int | None = None) -> np.ndarray:
    """The K x K matrix of counts, rows = gold label, columns = predicted label."""
    gold = np.asarray(gold, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if gold.shape != predicted.shape:
        raise ValueError(f"gold and predicted differ in shape: {gold.shape} vs {predicted.shape}")
    if num_classes is None:
        num_classes = int(max(gold.max(initial=1), predicted.max(initial=1))) + 1
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (gold, predicted), 1)
    return counts


def accuracy_from_confusion(counts: np.ndarray) -> np.ndarray:
    """Share of correct answers; 0 for an empty matrix."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=(-2, -1))
    correct = np.trace(counts, axis1=-2, axis2=-1)
    return np.divide(correct, total, out=np.zeros_like(total), where=total > 0)


def f1_from_confusion(counts: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1 (the GLUE convention for MRPC and QQP); 0 when class 1 is never gold nor predicted."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape[-2:] != (2, 2):
        raise ValueError(f"f1 is binary F1; this task has {counts.shape[-1]} classes (use accuracy or mcc)")
    tp = counts[..., 1, 1]
    fp = counts[..., 0, 1]
    fn = counts[..., 1, 0]
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def mcc_from_confusion(counts: np.ndarray) -> np.ndarray:
    """Matthews correlation (Gorodkin's K-class form, equal to the usual formula for two classes).

    0 when it is undefined (a constant prediction or a single gold class), as scikit-learn does.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=(-2, -1))
    correct = np.trace(counts, axis1=-2, axis2=-1)
    gold = counts.sum(axis=-1)  # per class, how often it is the gold label
    predicted = counts.sum(axis=-2)  # per class, how often it is predicted
    numerator = correct * total - (gold * predicted).sum(axis=-1)
    denominator = np.sqrt(total**2 - (predicted**2).sum(axis=-1)) * np.sqrt(total**2 - (gold**2).sum(axis=-1))
    return np.divide(numerator, denominator, out=np.zeros_like(total), where=denominator > 0)


_FROM_CONFUSION = {"accuracy": accuracy_from_confusion, "f1": f1_from_confusion, "mcc": mcc_from_confusion}


def confusion_metric_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The metric `name` as a function of (a stack of) confusion matrices."""
    try:
        return _FROM_CONFUSION[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}: expected one of {', '.join(METRICS)}") from None


def metric_fn(name: str) -> Callable[..., float]:
    """The metric `name` as a function of (gold labels, predicted labels) -> float."""
    from_confusion = confusion_metric_fn(name)

    def score(gold, predicted, num_classes: int | None = None) -> float:
        if name == "f1" and num_classes is None:
            num_classes = 2
        return float(from_confusion(confusion(gold, predicted, num_classes)))

    score.__name__ = name
    score.__doc__ = f"{name} of predicted against gold labels."
    return score


accuracy = metric_fn("accuracy")
f1 = metric_fn("f1")
mcc = metric_fn("mcc")
