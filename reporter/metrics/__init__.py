"""Metrics: classification and calibration; explanation trust in :mod:`reporter.metrics.trust`."""

from reporter.metrics.classification import (
    calibration,
    classification_metrics,
    confusion_matrix,
    top_k_accuracy,
)

__all__ = ["calibration", "classification_metrics", "confusion_matrix", "top_k_accuracy"]
