"""Display helpers: a saliency map blended over an image, as pixels.

Used by the report's galleries (:mod:`reporter.report.figures`) and by the notebook views
(:mod:`reporter.notebook`); usable on its own::

    from reporter import overlay

    pixels = overlay(image, result.upsampled("gradcam", layer)[0].numpy())  # [H, W, 3] uint8
"""

from __future__ import annotations

import matplotlib
import numpy as np

__all__ = ["overlay", "to_uint8_image"]


def to_uint8_image(image: np.ndarray) -> np.ndarray:
    """An image as ``[H, W, 3]`` uint8: uint8 ``[H, W, 3]`` passes through; floats in [0, 1]
    as ``[C, H, W]`` or ``[H, W, C]`` (C = 1 or 3) are converted."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:
        return arr
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def overlay(
    image: np.ndarray,
    saliency: np.ndarray | None,
    cmap: str = "viridis",
    alpha: float = 0.55,
) -> np.ndarray:
    """Blend a saliency map over an image as ``[H, W, 3]`` uint8.

    Args:
        image: ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` floats in [0, 1] (a tensor's
            ``.numpy()``; C = 1 or 3), or ``[H, W, 3]`` uint8.
        saliency: ``[H, W]`` in [0, 1] (float) or [0, 255] (uint8, as the bundle stores maps),
            at the image's size (``CamResult.upsampled`` gives that); ``None`` shows the image.
        cmap: A matplotlib colormap (viridis, cividis, magma and inferno are colour-blind safe).
        alpha: Weight of the map's colour.

    The image is shown in grey under the map so the colours read as saliency only.
    """
    base = to_uint8_image(image).astype(np.float32) / 255.0
    if saliency is None:
        return (base * 255 + 0.5).astype(np.uint8)
    sal = np.asarray(saliency)
    sal = sal / 255.0 if sal.dtype == np.uint8 else np.nan_to_num(np.clip(sal, 0, 1))
    gray = base.mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    colour = matplotlib.colormaps[cmap](sal)[..., :3].astype(np.float32)
    out = (1 - alpha) * gray + alpha * colour
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
