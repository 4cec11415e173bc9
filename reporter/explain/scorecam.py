"""Score-CAM's masked forward passes, batched across images and channels.

Each channel ``k`` of a layer's activations is upsampled to the input size, min-max normalised to
``[0, 1]`` and multiplied with the image; the model's score for the target class on that masked
image is the channel's score (the softmax over channels, taken in
:func:`reporter.explain.methods.scorecam`, gives the weights). This follows pytorch-grad-cam's
``ScoreCAM`` (bilinear upsampling with ``align_corners=True``), normalises with the project's one
min-max normalisation (:func:`reporter.explain.result.normalize_maps`: pytorch-grad-cam adds
``1e-8`` to the span instead, which changes nothing visible), and builds masks chunk by chunk,
so memory stays at one chunk of masked images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from reporter.explain.result import normalize_maps

__all__ = ["channel_masks", "scorecam_scores"]


def channel_masks(acts: Tensor, size: tuple[int, int]) -> Tensor:
    """Upsample activation maps ``[M, h, w]`` to ``size`` and min-max normalise each one.

    Returns:
        Masks ``[M, H, W]`` in ``[0, 1]``.
    """
    up = F.interpolate(acts.unsqueeze(1), size=size, mode="bilinear", align_corners=True)
    return normalize_maps(up.squeeze(1)).to(up.dtype)


@torch.inference_mode()
def scorecam_scores(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    acts: Tensor,
    targets: Tensor,
    *,
    batch_size: int = 64,
) -> Tensor:
    """Target-class logits of every image masked by every channel, ``[B, C]``.

    Args:
        forward: Maps an image batch to logits ``[N, K]`` (the model, in eval mode).
        images: Input images ``[B, 3, H, W]``.
        acts: The layer's activations ``[B, C, h, w]``.
        targets: Target class per image, ``[B]`` long.
        batch_size: Masked images per forward pass.

    Returns:
        A normal (non-inference) float tensor ``[B, C]`` on ``images``' device.
    """
    b, c = int(acts.shape[0]), int(acts.shape[1])
    size = (int(images.shape[-2]), int(images.shape[-1]))
    flat_acts = acts.reshape(b * c, *acts.shape[2:])
    total = b * c
    scores = torch.empty(total, dtype=torch.float32, device=images.device)
    step = max(1, int(batch_size))
    for start in range(0, total, step):
        stop = min(start + step, total)
        index = torch.arange(start, stop, device=images.device)
        owner = torch.div(index, c, rounding_mode="floor")
        masks = channel_masks(flat_acts[start:stop].to(images.dtype), size)
        logits = forward(images[owner] * masks.unsqueeze(1))
        scores[start:stop] = logits.gather(1, targets[owner].reshape(-1, 1)).squeeze(1).float()
    with torch.inference_mode(False):
        return scores.reshape(b, c).clone()
