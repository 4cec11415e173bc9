"""Small helpers shared by the trust metrics (shape checks, resizing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["as_maps", "resize_maps"]


def as_maps(maps: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """Return ``maps`` as a float tensor ``[B, H, W]`` (accepts ``[B, 1, H, W]``)."""
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"{name} must have shape [B, H, W], got {tuple(maps.shape)}")
    return maps if maps.is_floating_point() else maps.float()


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize float maps ``[B, h, w]`` to ``size`` (a no-op when already there)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
