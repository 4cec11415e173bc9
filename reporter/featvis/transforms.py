"""Robustness transforms applied to the image at every optimization step.

An image that keeps a unit active under small random shifts, rescalings and rotations shows the
feature rather than adversarial high-frequency noise (Olah et al. 2017). Each transform is a
callable ``(images, generator) -> images``; all randomness comes from the ``torch.Generator``
passed in, so a seed gives the same sequence of transforms. One draw is shared by the whole batch
(one affine grid for all K images), which keeps batched rendering cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Transform",
    "compose",
    "jitter",
    "pad",
    "random_rotate",
    "random_scale",
    "standard_transforms",
]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _choice(values: Sequence[float], generator: torch.Generator) -> float:
    i = int(torch.randint(len(values), (1,), generator=generator).item())
    return float(values[i])


def pad(width: int, *, mode: str = "constant", value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels (``mode`` as in :func:`torch.nn.functional.pad`)."""

    def transform(x: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        if width <= 0:
            return x
        if mode == "constant":
            return F.pad(x, (width,) * 4, mode="constant", value=value)
        return F.pad(x, (width,) * 4, mode=mode)

    return transform


def jitter(d: int) -> Transform:
    """Crop at a random offset of up to ``d - 1`` pixels (the image shrinks by ``d - 1``)."""

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if d <= 1:
            return x
        h, w = x.shape[-2:]
        dx = int(torch.randint(d, (1,), generator=generator).item())
        dy = int(torch.randint(d, (1,), generator=generator).item())
        return x[..., dy : dy + h - d + 1, dx : dx + w - d + 1]

    return transform


def random_scale(scales: Sequence[float]) -> Transform:
    """Rescale by a factor drawn from ``scales`` (bilinear; the size changes)."""

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = _choice(scales, generator)
        if s == 1.0:
            return x
        h, w = x.shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return transform


def random_rotate(angles: Sequence[float]) -> Transform:
    """Rotate by an angle (degrees) drawn from ``angles``; the size is kept."""

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angle = _choice(angles, generator)
        if angle == 0.0:
            return x
        theta = math.radians(angle)
        c, s = math.cos(theta), math.sin(theta)
        matrix = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(matrix.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    return transform


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in transforms:
            x = t(x, generator)
        return x

    return transform


def standard_transforms(size: int = 128) -> list[Transform]:
    """Lucid's standard robustness set, scaled to the image size.

    For a 224-pixel image: pad 12, jitter 8, scale 0.9-1.1, rotate -10..10 degrees, jitter 4.
    """
    unit = max(size / 224.0, 1.0 / 16)
    return [
        pad(max(1, round(12 * unit))),
        jitter(max(2, round(8 * unit))),
        random_scale([1 + (i - 5) / 50 for i in range(11)]),
        random_rotate([*range(-10, 11), *([0] * 5)]),
        jitter(max(2, round(4 * unit))),
    ]
