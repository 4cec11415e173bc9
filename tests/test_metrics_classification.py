"""Classification and calibration metrics on hand-made probabilities with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from reporter.metrics import calibration, classification_metrics, confusion_matrix, top_k_accuracy


def test_confusion_and_per_class() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    m = classification_metrics(probs, labels, ["a", "b"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    a, b = m["per_class"]
    assert a["precision"] == pytest.approx(0.5) and a["recall"] == 1.0
    assert b["precision"] == 1.0 and b["recall"] == pytest.approx(2 / 3)
    assert b["support"] == 3
    assert "top5_accuracy" not in m


def test_ece_by_hand() -> None:
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1], dtype=bool)
    ece, bins = calibration(conf, correct, n_bins=10)
    # bin (0.9, 1.0]: conf .95, acc .5 -> .45 * 2/4; bin (0.5, 0.6]: conf .55 acc 1 -> .45 * 2/4
    assert ece == pytest.approx(0.45)
    assert sum(b["count"] for b in bins) == 4


def test_nan_rows_count_as_wrong() -> None:
    probs = np.array([[np.nan, np.nan], [0.1, 0.9]])
    m = classification_metrics(probs, np.array([0, 1]), ["a", "b"])
    assert m["nan_predictions"] == 1
    assert m["accuracy"] == pytest.approx(0.5)


def test_top_k_and_confusion_helpers() -> None:
    probs = np.eye(6)[[1, 2, 3]] * 0.5 + 0.05
    labels = np.array([1, 0, 5])
    assert top_k_accuracy(probs, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, labels, 6) == 1.0
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([1, 0, 1]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]
