"""Object masks for a user's image folder (``--masks DIR``).

The masks folder mirrors the image folder: the mask of ``images/cat/001.jpg`` is
``masks/cat/001.<any image extension>``; a non-zero pixel is the object. A missing or unreadable
mask is recorded, never an error. Masks go through the same resize and centre crop as the images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reporter.data.datasets import FileImageDataset, ImageDataset, display_name
from reporter.data.registry import IMAGE_EXTENSIONS
from reporter.data.transforms import ImageReadError, Preprocess, read_image
from reporter.errors import ReporterError

__all__ = ["load_masks"]


def _find(masks_dir: Path, relative: str) -> Path | None:
    stem = (masks_dir / relative).with_suffix("")
    exact = masks_dir / relative
    if exact.is_file():
        return exact
    for ext in sorted(IMAGE_EXTENSIONS):
        for candidate in (stem.with_suffix(ext), stem.with_suffix(ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def load_masks(
    dataset: ImageDataset,
    indices: list[int],
    masks_dir: str | Path | None,
    preprocess: Preprocess,
) -> tuple[torch.Tensor | None, list[dict[str, str]]]:
    """Masks ``[N, H, W]`` (bool) for the dataset items ``indices``, and the missing ones.

    Generated data (``shapes``) carries exact masks; for a folder, ``masks_dir`` is searched.
    Items without a usable mask get an all-false mask and a ``{"path", "reason"}`` record.

    Returns:
        ``(masks or None when no mask source exists, missing records)``.
    """
    stored = getattr(dataset, "masks", None)
    height, width = preprocess.input_size
    if stored is not None:
        m = torch.as_tensor(stored)[indices].float()
        if tuple(m.shape[-2:]) != (height, width):
            m = torch.nn.functional.interpolate(m[:, None], size=(height, width), mode="nearest")[
                :, 0
            ]
        return m > 0.5, []
    if masks_dir is None:
        return None, []
    root = Path(masks_dir)
    if not root.is_dir():
        raise ReporterError(f"Masks folder not found: {root}")
    if not isinstance(dataset, FileImageDataset):
        raise ReporterError("--masks needs an image folder as --data (built-in data has its own).")
    unit = preprocess.for_masks()
    out = torch.zeros(len(indices), height, width, dtype=torch.bool)
    missing: list[dict[str, str]] = []
    for row, index in enumerate(indices):
        relative = dataset.relative_path(dataset.files[index])
        path = _find(root, relative)
        if path is None:
            missing.append(
                {"path": display_name(root / relative), "reason": "no mask for this image"}
            )
            continue
        try:
            binary = read_image(str(path)).convert("L").point(lambda v: 255 if v else 0)
            out[row] = unit.to_unit(binary)[0] > 0.5
        except ImageReadError as exc:
            missing.append({"path": display_name(path), "reason": f"mask unreadable: {exc}"})
    return out, missing
