"""Localization against object masks: pointing game and energy-based pointing game.

- Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", 2018): a hit
  when the map's maximum lies on the object (optionally within ``tolerance`` pixels of it).
- Energy-based pointing game (Wang et al., "Score-CAM", 2020): the fraction of the map's total
  (non-negative) mass that falls inside the object mask.

Maps at another resolution than the masks are resized bilinearly to the mask size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from reporter.metrics.trust._common import as_maps, resize_maps
from reporter.models.meta import int_pair

__all__ = [
    "ZHANG_TOLERANCE",
    "dilate",
    "energy_pointing_game",
    "per_class",
    "pointing_game",
    "zhang_tolerance",
]

ZHANG_TOLERANCE = 15
"""Zhang et al.'s pointing-game tolerance: 15 pixels at their 224 x 224 input."""


def zhang_tolerance(height: int, width: int) -> int:
    """Zhang et al.'s 15-pixel tolerance scaled to an input of ``height x width`` (from 224)."""
    return max(0, round(ZHANG_TOLERANCE * min(height, width) / 224))


def _prepare(saliency: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    masks = masks.bool()
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    sal = as_maps(saliency)
    if masks.dim() != 3 or masks.shape[0] != sal.shape[0]:
        raise ValueError(f"masks must be [B, H, W] with B={sal.shape[0]}, got {tuple(masks.shape)}")
    return resize_maps(sal.to(masks.device), int_pair(masks.shape[-2:], "mask size")), masks


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow boolean masks ``[B, H, W]`` by ``radius`` pixels (Euclidean disk)."""
    if radius <= 0:
        return masks.bool()
    r = int(radius)
    yy, xx = torch.meshgrid(
        torch.arange(-r, r + 1, device=masks.device),
        torch.arange(-r, r + 1, device=masks.device),
        indexing="ij",
    )
    disk = ((yy * yy + xx * xx) <= r * r).float().view(1, 1, 2 * r + 1, 2 * r + 1)
    grown = F.conv2d(masks.float()[:, None], disk, padding=r)
    return grown[:, 0] > 0.5


def pointing_game(
    saliency: torch.Tensor, masks: torch.Tensor, tolerance: int = 0, *, plateau: str = "half"
) -> torch.Tensor:
    """Pointing-game hits per image.

    Args:
        saliency: ``[B, h, w]`` maps.
        masks: ``[B, H, W]`` boolean object masks.
        tolerance: Pixels of slack around the object (Zhang et al. use :data:`ZHANG_TOLERANCE`
            = 15 at 224 x 224; :func:`zhang_tolerance` scales it to another size).
        plateau: When the maximum is reached at several pixels (a plateau, or a constant map):
            ``"half"`` (default) counts a hit when at least half of the maximal pixels lie on
            the (dilated) object, so a constant map only hits when the object covers half the
            image; ``"any"`` counts a hit when any of them does (Quantus' ``PointingGame``).

    Returns:
        ``[B]`` bool; with a unique maximum both rules agree.
    """
    if plateau not in ("half", "any"):
        raise ValueError(f"plateau must be 'half' or 'any', got {plateau!r}")
    sal, masks = _prepare(saliency, masks)
    target = dilate(masks, tolerance)
    flat = sal.flatten(1)
    top = flat.max(dim=1, keepdim=True).values
    span = top - flat.min(dim=1, keepdim=True).values
    at_max = flat >= top - 1e-6 * span
    inside = (at_max & target.flatten(1)).sum(dim=1)
    if plateau == "any":
        return inside > 0
    return 2 * inside >= at_max.sum(dim=1)


def energy_pointing_game(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fraction of saliency energy inside the object, per image.

    Pass the **raw** non-negative maps (the engine's maps after the method's ReLU, upsampled
    without normalisation), as Wang et al. and Quantus' ``RelevanceMassAccuracy`` do. The ratio
    does not change when a map is scaled, but min-max normalisation also subtracts the map's
    minimum, which removes a constant floor and moves mass between inside and outside.

    Args:
        saliency: ``[B, h, w]`` maps; negative values are clamped to 0.
        masks: ``[B, H, W]`` boolean object masks.

    Returns:
        ``[B]`` fractions in ``[0, 1]``. A map with no mass carries no information and scores
        what a uniform map would: the object's area fraction.
    """
    sal, masks = _prepare(saliency, masks)
    sal = sal.clamp(min=0).flatten(1)
    m = masks.flatten(1)
    total = sal.sum(dim=1)
    inside = (sal * m).sum(dim=1)
    area = m.float().mean(dim=1)
    return torch.where(total > 0, inside / total.clamp(min=1e-30), area).clamp(0, 1)


def per_class(
    values: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
) -> dict[str, dict[str, float | int]]:
    """Aggregate per-image values by class.

    Args:
        values: ``[B]`` numbers or booleans (a boolean mean is a rate).
        labels: ``[B]`` class indices (true labels or predictions, as the caller chooses).
        class_names: Names in label order; classes without images are left out.

    Returns:
        ``{class_name: {"mean": float, "n": int}}``.
    """
    values = values.float().reshape(-1).cpu()
    labels = labels.reshape(-1).cpu()
    out: dict[str, dict[str, float | int]] = {}
    for index, name in enumerate(class_names):
        sel = labels == index
        n = int(sel.sum())
        if n:
            out[name] = {"mean": float(values[sel].mean()), "n": n}
    return out
