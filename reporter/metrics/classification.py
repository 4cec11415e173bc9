"""Classification and calibration metrics from predicted probabilities (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["calibration", "classification_metrics", "confusion_matrix", "top_k_accuracy"]


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of images of true class ``i`` predicted as ``j``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of images whose true class is among the ``k`` most probable."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def calibration(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error and the reliability curve over equal-width bins.

    Args:
        confidence: Top-1 probability per image.
        correct: Whether the top-1 prediction was right.
        n_bins: Number of bins on [0, 1] (15, as in Guo et al. 2017).

    Returns:
        ``(ece, bins)`` where each bin is ``{"lo", "hi", "count", "confidence", "accuracy"}``
        (confidence and accuracy are ``None`` for empty bins).
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; confidence 0 goes to the first bin
    ids = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    bins = []
    n = max(len(confidence), 1)
    for i in range(n_bins):
        sel = ids == i
        count = int(sel.sum())
        if count:
            conf = float(confidence[sel].mean())
            acc = float(correct[sel].mean())
            ece += count / n * abs(acc - conf)
        else:
            conf = acc = None
        bins.append(
            {
                "lo": float(edges[i]),
                "hi": float(edges[i + 1]),
                "count": count,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return float(ece), bins


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, class_names: list[str], n_bins: int = 15
) -> dict[str, Any]:
    """All headline and per-class metrics as JSON-ready builtins.

    Images whose probabilities contain NaN (a model that failed on them) count as wrong and
    are reported in ``nan_predictions``.

    Returns:
        ``accuracy`` (fraction), ``top5_accuracy`` (when more than 5 classes), ``macro_f1``,
        ``per_class`` (precision, recall, f1, support per class), ``confusion_matrix``,
        ``ece``, ``reliability``, confidence summaries and counts.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(class_names)
    n = len(labels)
    bad = ~np.isfinite(probs).all(axis=1) if n else np.zeros(0, dtype=bool)
    safe = np.where(np.isfinite(probs), probs, -1.0)
    preds = safe.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    confidence = np.where(bad, 0.0, safe.max(axis=1)) if n else np.zeros(0)
    correct = (preds == labels) & ~bad
    cm = confusion_matrix(labels[~bad], preds[~bad], num_classes)
    per_class = []
    f1s = []
    for c, name in enumerate(class_names):
        tp = int(cm[c, c])
        support = int((labels == c).sum())
        predicted = int(cm[:, c].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            f1s.append(f1)
        per_class.append(
            {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support}
        )
    ece, bins = calibration(confidence[~bad], correct[~bad], n_bins)
    out: dict[str, Any] = {
        "n_images": n,
        "accuracy": float(correct.mean()) if n else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "ece": ece,
        "reliability": bins,
        "mean_confidence": float(confidence.mean()) if n else float("nan"),
        "mean_confidence_correct": float(confidence[correct].mean()) if correct.any() else None,
        "mean_confidence_wrong": (
            float(confidence[~correct & ~bad].mean()) if (~correct & ~bad).any() else None
        ),
        "nan_predictions": int(bad.sum()),
    }
    if num_classes > 5:
        out["top5_accuracy"] = top_k_accuracy(safe, labels, 5)
    return out
