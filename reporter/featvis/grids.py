"""Image grids as PNG files: rendered units, dataset crops, filters, activation maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from reporter.explain.result import normalize_maps

__all__ = [
    "colorize",
    "crop",
    "image_grid",
    "save_activation_grid",
    "save_grid",
    "save_image",
    "to_pil",
]


def to_pil(image: torch.Tensor):
    """A ``[C, H, W]`` tensor in [0, 1] (C = 1 or 3) as a PIL image."""
    from PIL import Image

    t = image.detach().float().cpu().clamp(0, 1)
    array = (t * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array[:, :, :3], mode="RGB")


def save_image(image: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Save a ``[C, H, W]`` tensor in [0, 1] as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="PNG")
    return path


def _upscale(images: torch.Tensor, min_cell: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    factor = max(1, -(-min_cell // max(h, w)))
    if factor == 1:
        return images
    return F.interpolate(images, scale_factor=factor, mode="nearest")


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
    min_cell: int = 64,
) -> torch.Tensor:
    """Tile images ``[N, C, H, W]`` (or a list of ``[C, H, W]`` of any sizes) into one image.

    Images of different sizes (dataset crops) are resized to the largest; small images are
    upscaled with nearest-neighbour so each cell is at least ``min_cell`` pixels.

    Returns:
        ``[C, H, W]`` in [0, 1] (C = 1 if every image is grayscale, else 3).
    """
    from torchvision.utils import make_grid

    if isinstance(images, torch.Tensor):
        batch = images.detach().float().cpu()
    else:
        items = [i.detach().float().cpu() for i in images]
        if not items:
            raise ValueError("no images to tile")
        channels = max(i.shape[0] for i in items)
        hh = max(i.shape[-2] for i in items)
        ww = max(i.shape[-1] for i in items)
        batch = torch.stack(
            [
                F.interpolate(i[None], size=(hh, ww), mode="nearest")[0].expand(channels, -1, -1)
                for i in items
            ]
        )
    batch = _upscale(batch.clamp(0, 1), min_cell)
    nrow = nrow or max(1, round(batch.shape[0] ** 0.5 + 0.49))
    grid = make_grid(batch, nrow=nrow, padding=padding, pad_value=pad_value)
    return grid[:1] if batch.shape[1] == 1 else grid


def save_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike[str],
    **kwargs: object,
) -> Path:
    """Tile images with :func:`image_grid` and save the grid as a PNG; returns the path."""
    return save_image(image_grid(images, **kwargs), path)  # type: ignore[arg-type]


def colorize(maps: torch.Tensor, cmap: str = "viridis") -> torch.Tensor:
    """Min-max normalise each map ``[N, h, w]`` on its own and colour it: ``[N, 3, h, w]``."""
    import matplotlib

    norm = normalize_maps(maps.detach().cpu())
    rgba = matplotlib.colormaps[cmap](norm.numpy())
    return torch.from_numpy(rgba[..., :3]).float().permute(0, 3, 1, 2)


def save_activation_grid(
    maps: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    max_channels: int = 64,
    cmap: str = "viridis",
) -> Path:
    """Save the first ``max_channels`` feature maps ``[C, h, w]`` of one image as a PNG grid."""
    if maps.dim() != 3:
        raise ValueError(f"expected feature maps [C, h, w], got {tuple(maps.shape)}")
    return save_grid(colorize(maps[:max_channels], cmap), path, padding=1)


def crop(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop ``[C, H, W]`` to ``box = (top, left, bottom, right)`` (exclusive ends)."""
    top, left, bottom, right = box
    return image[..., top:bottom, left:right]
