"""Classification metrics from label ids: confusion matrix, accuracy, per-class precision/recall/F1, macro-F1.

Pure NumPy, no TensorFlow. Conventions (as scikit-learn with `zero_division=0`): a class never predicted has
precision 0, a class absent from the references has recall 0, and F1 is 0 whenever precision + recall is 0.
Macro-F1 averages F1 over every class in the label set (absent ones included, so it is comparable across runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """int64 [C, C]: row = reference class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} references but {y_pred.size} predictions")
    for name, ids in (("reference", y_true), ("predicted", y_pred)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} label ids must be in [0, {num_classes}), got {ids.min()}..{ids.max()}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


@dataclass
class ClassReport:
    """Per-class and overall scores computed from one confusion matrix."""

    confusion: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @property
    def accuracy(self) -> float:
        total = int(self.confusion.sum())
        return float(np.trace(self.confusion) / total) if total else 0.0

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean()) if self.f1.size else 0.0

    @property
    def macro_precision(self) -> float:
        return float(self.precision.mean()) if self.precision.size else 0.0

    @property
    def macro_recall(self) -> float:
        return float(self.recall.mean()) if self.recall.size else 0.0

    @property
    def weighted_f1(self) -> float:
        total = self.support.sum()
        return float((self.f1 * self.support).sum() / total) if total else 0.0

    def per_class(self, names: Sequence[str]) -> list[dict[str, Any]]:
        return [{"label": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for name, p, r, f, s in zip(names, self.precision, self.recall, self.f1, self.support, strict=True)]


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def class_report(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> ClassReport:
    """Scores for label ids in [0, num_classes)."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1)
    precision = _safe_divide(true_pos, predicted)
    recall = _safe_divide(true_pos, support.astype(np.float64))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return ClassReport(confusion=matrix, precision=precision, recall=recall, f1=f1, support=support)
