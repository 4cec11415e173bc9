"""Streamed batched inference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from reporter.data.datasets import ImageDataset, make_loader
from reporter.data.transforms import NONFINITE_PIXELS
from reporter.nn.hooks import eval_mode
from reporter.progress import progress_bar

__all__ = ["Predictions", "collect_predictions", "predict", "record_skipped"]


@dataclass
class Predictions:
    """Per-image outputs of a prediction pass (only usable images).

    Attributes:
        probs: Softmax probabilities ``[N, K]`` (NaN rows where the model produced NaN or
            +inf logits for the image).
        labels: True labels ``[N]``.
        indices: Dataset indices ``[N]`` of those images.
        skipped: Images that could not be read, as ``{"path", "reason"}``; images whose pixels
            hold NaN/inf are skipped here with the reason
            :data:`~reporter.data.transforms.NONFINITE_PIXELS`, not given to the model.

    Rows that are not finite must stay out of anything that ranks or averages confidence
    (galleries, calibration): select with :attr:`finite`.
    """

    probs: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def finite(self) -> np.ndarray:
        """Boolean ``[N]``: the model's output for the image is finite (usable)."""
        return np.isfinite(self.probs).all(axis=1)

    @property
    def nonfinite_outputs(self) -> int:
        """Images whose output holds NaN/inf (the model's fault)."""
        return int((~self.finite).sum())

    @property
    def nonfinite_inputs(self) -> int:
        """Images skipped because their pixels hold NaN/inf (the data's fault, not the model's)."""
        return sum(1 for item in self.skipped if item.get("reason") == NONFINITE_PIXELS)

    @property
    def preds(self) -> np.ndarray:
        """Top-1 predicted class per image (0 where the output was not finite: see
        :attr:`finite`)."""
        safe = np.where(np.isfinite(self.probs), self.probs, -1.0)
        return safe.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Top-1 probability per image (0 where the output was NaN)."""
        safe = np.where(np.isfinite(self.probs), self.probs, 0.0)
        return safe.max(axis=1)


def record_skipped(
    dataset: ImageDataset, skipped: list[tuple[int, str]], into: list[dict[str, str]]
) -> None:
    """Append ``(index, reason)`` pairs from a batch as ``{"path", "reason"}`` records."""
    for index, reason in skipped:
        into.append({"path": dataset.describe(index), "reason": reason})


def predict(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    indices: list[int] | None = None,
) -> Predictions:
    """Run the model over ``dataset`` (or its items ``indices``) in batches, keeping only
    per-image outputs.

    Unreadable images are skipped and recorded; the model's mode is restored afterwards.
    """
    device = torch.device(device)
    probs, labels, indices_out = [], [], []
    skipped: list[dict[str, str]] = []
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, indices=indices)
    with eval_mode(model), torch.inference_mode():
        for batch in progress_bar(loader, desc="predict", enabled=progress, unit="batch"):
            record_skipped(dataset, batch.skipped, skipped)
            if len(batch) == 0:
                continue
            logits = model(batch.images.to(device))
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            labels.append(batch.labels.numpy())
            indices_out.append(batch.indices.numpy())
    return collect_predictions(probs, labels, indices_out, skipped, len(dataset.class_names))


def collect_predictions(
    probs: list[np.ndarray],
    labels: list[np.ndarray],
    indices: list[np.ndarray],
    skipped: list[dict[str, str]],
    num_classes: int,
) -> Predictions:
    """Concatenate per-batch outputs into :class:`Predictions` (empty arrays for no batches)."""
    return Predictions(
        probs=np.concatenate(probs) if probs else np.zeros((0, num_classes), np.float32),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        indices=np.concatenate(indices) if indices else np.zeros(0, np.int64),
        skipped=skipped,
    )
