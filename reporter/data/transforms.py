"""Preprocessing that follows a model's metadata, and its inverse for display."""

from __future__ import annotations

import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps

__all__ = [
    "NONFINITE_PIXELS",
    "ImageReadError",
    "Preprocess",
    "not_a_regular_file",
    "pil_to_tensor",
    "read_image",
    "to_channels",
]

NONFINITE_PIXELS = "the image has NaN/inf pixel values"
"""The ``skipped`` reason of a float image (TIFF) holding NaN or infinite pixels."""


class ImageReadError(Exception):
    """An image file that cannot be used; the message is the reason recorded in ``skipped``."""


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be an image file, or ``None`` for a regular file (or a folder).

    Looks without opening anything: a FIFO would block a reader forever.
    """
    try:
        mode = path.stat().st_mode  # follows a symbolic link to its target
    except FileNotFoundError:
        if path.is_symlink():
            return "broken symbolic link (its target does not exist)"
        return "file disappeared while reading"
    except OSError as exc:
        if path.is_symlink():
            return f"symbolic link that cannot be followed ({exc.strerror or exc})"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a regular file; not opened"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file, not a regular file; not opened"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file; not opened"
    return "not a regular file; not opened"


def read_image(path: str) -> Image.Image:
    """Open an image file fully, upright (EXIF orientation applied), or raise ImageReadError.

    Pillow's decompression-bomb guard answers with an ImageReadError that says so. Corrupt EXIF
    data is ignored (the pixels are still good; only the orientation is then unknown). Any other
    failure of a decoder is an ImageReadError too, so one odd file never stops a run.
    """
    # Some libraries (WeasyPrint among them) set ImageFile.LOAD_TRUNCATED_IMAGES = True on
    # import, which would silently fill a truncated file with grey; we want it reported.
    odd = not_a_regular_file(Path(path))  # never open a FIFO or a device: it can block
    if odd is not None:
        raise ImageReadError(odd)
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
            with Image.open(path) as img:
                img.load()
                upright = ImageOps.exif_transpose(img) or img
                return upright.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(
            f"image too large to decode safely ({exc}); resize it below "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels"
        ) from None
    except FileNotFoundError:
        raise ImageReadError("file disappeared while reading") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc) or type(exc).__name__
        raise ImageReadError(f"corrupt or truncated image ({text})") from None
    except MemoryError:
        raise ImageReadError("not enough memory to decode this image; resize it") from None
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the run
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise ImageReadError(
            f"could not decode the image ({type(exc).__name__}{': ' + text if text else ''})"
        ) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """Convert any Pillow image to a float tensor ``[C, H, W]`` in [0, 1], C in {1, 3}.

    Handles 16-bit and float grayscale, palette, alpha (composited on white) and CMYK.

    Raises:
        ImageReadError: for a float image with NaN or infinite pixels (:data:`NONFINITE_PIXELS`).
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():  # a float TIFF: not the model's fault, not usable
            raise ImageReadError(NONFINITE_PIXELS)
        lo, hi = (0.0, 65535.0) if mode.startswith("I;16") else (float(arr.min()), float(arr.max()))
        if mode == "I" and arr.max() <= 255 and arr.min() >= 0:
            lo, hi = 0.0, 255.0
        arr = (arr - lo) / max(hi - lo, 1e-12)
        return torch.from_numpy(np.clip(arr, 0, 1).astype(np.float32))[None]
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
        img = img.convert("L" if mode in ("LA", "La") else "RGB")
    elif mode in ("1", "L"):
        img = img.convert("L")
    elif mode != "RGB":
        img = img.convert("RGB")
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        return torch.from_numpy(pixels.copy())[None]
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Adapt ``[C, H, W]`` to ``channels`` (gray -> RGB by repetition, RGB -> gray by luminance)."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 1:
        return x.expand(*x.shape[:-3], channels, *x.shape[-2:]).clone()
    if channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(3, 1, 1)
        return (x * weights).sum(-3, keepdim=True)
    return x[..., :channels, :, :] if c > channels else to_channels(x[..., :1, :, :], channels)


class Preprocess:
    """Turn an image (Pillow or a ``[C, H, W]`` tensor in [0, 1]) into a model input.

    The image is resized so that it covers ``input_size`` while keeping its aspect ratio, centre
    cropped, converted to ``channels`` channels and normalised with ``mean`` / ``std``.

    Args:
        input_size: ``(height, width)``.
        channels: 1 or 3.
        mean: Per-channel mean (a single value is broadcast).
        std: Per-channel std.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        mean = list(mean) if len(mean) == channels else [float(mean[0])] * channels
        std = list(std) if len(std) == channels else [float(std[0])] * channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def to_unit(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """Resize, crop and adapt channels: ``[channels, H, W]`` in [0, 1], not normalised."""
        x = pil_to_tensor(image) if isinstance(image, Image.Image) else image.float()
        x = to_channels(x, self.channels)
        height, width = self.input_size
        h, w = x.shape[-2:]
        if (h, w) != (height, width):
            # Crop the source to the target's aspect ratio first, then resize: the same picture
            # as "resize to cover, then centre crop", but the intermediate never exceeds the
            # source. (Resizing first made a 1 x 30000 strip into 224 x 6.7M floats: 18 GB.)
            scale = max(height / h, width / w)
            crop_h = min(h, max(1, round(height / scale)))
            crop_w = min(w, max(1, round(width / scale)))
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            x = x[:, top : top + crop_h, left : left + crop_w]
            x = F.interpolate(
                x[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
            )[0]
        return x.clamp(0, 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply mean/std normalisation to ``[..., C, H, W]`` in [0, 1]."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`normalize` for display: ``[..., C, H, W]`` back to [0, 1]."""
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        return self.normalize(self.to_unit(image))
