"""Which class each image's map explains: the predicted class, one class for all, or per image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from reporter.errors import ReporterError

__all__ = ["TargetSpec", "resolve_targets", "target_scores"]

TargetSpec = int | Sequence[int] | Tensor | None
"""``None`` (predicted class), an ``int`` (that class for every image), or one class per image."""


def resolve_targets(targets: TargetSpec, logits: Tensor) -> Tensor:
    """Turn a target specification into a ``[B]`` long tensor on ``logits``' device.

    Args:
        targets: ``None`` for the predicted class (argmax of ``logits``), an ``int`` for the same
            class in every image, or a ``[B]`` tensor / sequence of class indices (e.g. the true
            labels).
        logits: The model's output ``[B, K]``.

    Raises:
        ReporterError: when the shape is wrong or a class index is outside ``[0, K)``.
    """
    batch, num_classes = int(logits.shape[0]), int(logits.shape[1])
    if targets is None:
        return logits.detach().argmax(dim=1)
    if isinstance(targets, bool):
        raise ReporterError(f"Targets must be class indices, got {targets!r}.")
    if isinstance(targets, int):
        out = torch.full((batch,), targets, dtype=torch.long, device=logits.device)
    else:
        out = torch.as_tensor(targets).to(device=logits.device).reshape(-1)
        if out.is_floating_point() or out.is_complex() or out.dtype == torch.bool:
            raise ReporterError(f"Targets must be integer class indices, got dtype {out.dtype}.")
        out = out.long()
        if out.numel() != batch:
            raise ReporterError(
                f"Got {out.numel()} targets for a batch of {batch} images; pass one class index "
                "per image, a single int, or None for the predicted class."
            )
    if out.numel() and (int(out.min()) < 0 or int(out.max()) >= num_classes):
        raise ReporterError(
            f"Target class out of range: the model has {num_classes} classes (0 to "
            f"{num_classes - 1}), got {out.tolist() if out.numel() <= 16 else 'indices'} "
            f"outside that range."
        )
    return out


def target_scores(logits: Tensor, targets: Tensor) -> Tensor:
    """Each image's score for its target class, ``[B]``."""
    return logits.gather(1, targets.reshape(-1, 1)).squeeze(1)
