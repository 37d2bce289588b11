"""Classification metrics against hand computations."""

import numpy as np
import pytest

from llmctl.evaluation.classify_metrics import class_report, confusion_matrix


def test_confusion_matrix_rows_are_references():
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 2, 2]
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]


def test_precision_recall_f1_macro_by_hand():
    # class 0: tp=1 fp=0 fn=1 -> P=1, R=1/2, F1=2/3
    # class 1: tp=2 fp=1 fn=1 -> P=2/3, R=2/3, F1=2/3
    # class 2: tp=1 fp=1 fn=0 -> P=1/2, R=1, F1=2/3
    report = class_report([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 2, 2], 3)
    assert np.allclose(report.precision, [1.0, 2 / 3, 0.5])
    assert np.allclose(report.recall, [0.5, 2 / 3, 1.0])
    assert np.allclose(report.f1, [2 / 3, 2 / 3, 2 / 3])
    assert report.support.tolist() == [2, 3, 1]
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.macro_f1 == pytest.approx(2 / 3)
    assert report.macro_precision == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert report.weighted_f1 == pytest.approx(2 / 3)


def test_unequal_f1_macro_average():
    # class 0: tp=3 fp=1 fn=0 -> P=3/4 R=1 F1=6/7 ; class 1: tp=0 fp=0 fn=1 -> P=0 R=0 F1=0
    report = class_report([0, 0, 0, 1], [0, 0, 0, 0], 2)
    assert report.f1 == pytest.approx([6 / 7, 0.0])
    assert report.macro_f1 == pytest.approx(3 / 7)
    assert report.precision[1] == 0.0  # never predicted: zero, not NaN


def test_absent_class_counts_in_macro_average():
    report = class_report([0, 1, 0, 1], [0, 1, 0, 1], 3)
    assert report.accuracy == 1.0
    assert report.f1.tolist() == [1.0, 1.0, 0.0]
    assert report.macro_f1 == pytest.approx(2 / 3)
    rows = report.per_class(["a", "b", "c"])
    assert rows[2] == {"label": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_bad_ids_are_refused():
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)
