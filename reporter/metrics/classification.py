"""Classification and calibration metrics from predicted probabilities (pure numpy)."""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

__all__ = [
    "CalibrationBin",
    "calibration",
    "classification_metrics",
    "confusion_matrix",
    "top_k_accuracy",
]


class CalibrationBin(TypedDict):
    """One bin of the reliability curve: ``(lo, hi]`` on the confidence axis."""

    lo: float
    hi: float
    count: int
    confidence: float | None  # mean top-1 probability; None for an empty bin
    accuracy: float | None  # share correct; None for an empty bin


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of images of true class ``i`` predicted as ``j``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of images whose true class is among the ``k`` most probable."""
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(_in_top_k(probs, labels, k)))


def calibration(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[float, list[CalibrationBin]]:
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
    bins: list[CalibrationBin] = []
    n = max(len(confidence), 1)
    for i in range(n_bins):
        sel = ids == i
        count = int(sel.sum())
        conf: float | None = None
        acc: float | None = None
        if count:
            conf = float(confidence[sel].mean())
            acc = float(correct[sel].mean())
            ece += count / n * abs(acc - conf)
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
    probs: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    n_bins: int = 15,
    *,
    nonfinite_inputs: int = 0,
) -> dict[str, Any]:
    """All headline and per-class metrics as JSON-ready builtins.

    Images whose probabilities are not all finite (a model that produced NaN or inf for them)
    count as wrong in accuracy and F1, are left out of calibration (ECE, reliability, mean
    confidence) and are counted in ``nonfinite_outputs``. A class without any image (none in
    the test split, or none readable) is listed in ``classes_without_images`` and left out of
    the macro F1 instead of counting as a zero.

    Args:
        probs: Softmax probabilities ``[N, K]``.
        labels: True labels ``[N]``.
        class_names: One name per class.
        n_bins: Reliability bins.
        nonfinite_inputs: Images skipped because their pixels held NaN/inf
            (:attr:`reporter.predict.Predictions.nonfinite_inputs`); reported as is.

    Returns:
        ``n_images``, ``accuracy`` (fraction), ``top5_accuracy`` (when more than 5 classes),
        ``macro_f1`` (over classes with images), ``per_class`` (precision, recall, f1, support),
        ``classes_without_images``, ``confusion_matrix``, ``ece`` and ``mean_confidence`` (NaN,
        written as null, when no image has a finite output), ``calibrated_images``,
        ``reliability``, confidence summaries, ``nonfinite_outputs`` (also under its older
        name ``nan_predictions``), ``all_outputs_nonfinite`` and ``nonfinite_inputs``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(class_names)
    n = len(labels)
    bad = ~np.isfinite(probs).all(axis=1) if n else np.zeros(0, dtype=bool)
    good = ~bad
    safe = np.where(np.isfinite(probs), probs, -1.0)
    preds = safe.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    confidence = np.where(bad, 0.0, safe.max(axis=1)) if n else np.zeros(0)
    correct = (preds == labels) & good
    cm = confusion_matrix(labels[good], preds[good], num_classes)
    per_class = []
    f1s = []
    without: list[str] = []
    for c, name in enumerate(class_names):
        tp = int(cm[c, c])
        support = int((labels == c).sum())
        predicted = int(cm[:, c].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            f1s.append(f1)
        else:
            without.append(name)
        per_class.append(
            {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support}
        )
    calibrated = int(good.sum())
    ece, bins = calibration(confidence[good], correct[good], n_bins)
    wrong_ok = ~correct & good
    out: dict[str, Any] = {
        "n_images": n,
        "accuracy": float(correct.mean()) if n else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "classes_without_images": without,
        "confusion_matrix": cm.tolist(),
        # no finite output at all: calibration is unknown, not perfect
        "ece": ece if calibrated else float("nan"),
        "calibrated_images": calibrated,
        "reliability": bins,
        "mean_confidence": float(confidence[good].mean()) if calibrated else float("nan"),
        "mean_confidence_correct": float(confidence[correct].mean()) if correct.any() else None,
        "mean_confidence_wrong": float(confidence[wrong_ok].mean()) if wrong_ok.any() else None,
        "nonfinite_outputs": int(bad.sum()),
        "nan_predictions": int(bad.sum()),
        "all_outputs_nonfinite": bool(n) and not calibrated,
        "nonfinite_inputs": int(nonfinite_inputs),
    }
    if num_classes > 5:
        out["top5_accuracy"] = (
            float(np.mean(_in_top_k(safe, labels, 5) & good)) if n else float("nan")
        )
    return out


def _in_top_k(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, kth=k - 1, axis=1)[:, :k]
    return np.any(top == labels[:, None], axis=1)
