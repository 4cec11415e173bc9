"""Small helpers shared by the trust metrics (shape checks, resizing, intervals)."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F

__all__ = ["as_maps", "bootstrap_interval", "resize_maps", "wilson_interval"]


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


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    values: torch.Tensor, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one number per image).

    Resampling is done with a private generator seeded with ``seed`` (the global RNG is
    untouched). One value gives a zero-width interval; none gives ``(0, 0)``.
    """
    v = values.detach().double().reshape(-1).cpu()
    n = v.numel()
    if n == 0:
        return (0.0, 0.0)
    if n == 1 or n_boot < 1:
        m = float(v.mean())
        return (m, m)
    gen = torch.Generator().manual_seed(int(seed))
    means = v[torch.randint(n, (n_boot, n), generator=gen)].mean(dim=1)
    alpha = (1 - confidence) / 2
    lo, hi = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return (float(lo), float(hi))
