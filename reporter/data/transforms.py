"""Preprocessing that follows a model's metadata, and its inverse for display."""

from __future__ import annotations

import math
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps

__all__ = [
    "CHANNEL_ORDERS",
    "NONFINITE_PIXELS",
    "RESIZE_POLICIES",
    "ImageReadError",
    "Preprocess",
    "not_a_regular_file",
    "pil_to_tensor",
    "preprocessing_summary",
    "read_image",
    "size_mismatch_hint",
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


RESIZE_POLICIES = ("cover", "stretch")
"""How an image is resized to the model's input: ``cover`` keeps the aspect ratio (the shorter
side fills the input, the rest is centre-cropped), ``stretch`` scales each side on its own."""
CHANNEL_ORDERS = ("rgb", "bgr")
"""Channel order the model was trained with (``bgr``: OpenCV / Caffe-style models)."""


class Preprocess:
    """Turn an image (Pillow or a ``[C, H, W]`` tensor in [0, 1]) into a model input.

    The one statement of a model's preprocessing. In order: the image is made grey first when
    ``grayscale`` (luminance, then repeated to ``channels``), converted to ``channels``, resized
    by the ``resize`` policy to ``input_size / crop`` and centre-cropped to ``input_size``
    (``crop = 0.875`` is torchvision's ImageNet "resize 256, crop 224"), then put in
    ``channel_order`` and normalised with ``mean`` / ``std`` (given in the model's channel order).

    :meth:`to_unit` stops before the channel order and normalisation: its ``[C, H, W]`` image in
    [0, 1] is what the report shows, always RGB; :meth:`normalize` and :meth:`denormalize` go
    between the two.

    Args:
        input_size: ``(height, width)``.
        channels: 1 or 3.
        mean: Per-channel mean (a single value is broadcast).
        std: Per-channel std.
        resize: ``cover`` (keep the aspect ratio; default) or ``stretch``.
        crop: Fraction of the resized image the centre crop keeps, in (0, 1] (default 1).
        channel_order: ``rgb`` (default) or ``bgr``.
        grayscale: Make images grey before anything else (a 3-channel model trained on grey
            images repeated to RGB).
    """

    def __init__(
        self,
        input_size: Sequence[int],
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        resize: str = "cover",
        crop: float = 1.0,
        channel_order: str = "rgb",
        grayscale: bool = False,
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        mean = list(mean) if len(mean) == channels else [float(mean[0])] * channels
        std = list(std) if len(std) == channels else [float(std[0])] * channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
        if not 0.0 < float(crop) <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {crop!r}")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}"
            )
        self.resize = resize
        self.crop = float(crop)
        self.channel_order = channel_order
        self.grayscale = bool(grayscale)

    @classmethod
    def from_meta(cls, meta: Any) -> Preprocess:
        """The preprocessing a :class:`~reporter.models.ModelMeta` states."""
        return cls(
            meta.input_size,
            meta.channels,
            meta.mean,
            meta.std,
            resize=meta.resize,
            crop=meta.crop,
            channel_order=meta.channel_order,
            grayscale=meta.grayscale,
        )

    def to(self, device: torch.device | str) -> Preprocess:
        """Hold ``mean`` and ``std`` on ``device`` (what :meth:`normalize` would otherwise copy
        there at every call); returns ``self``."""
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def for_masks(self) -> Preprocess:
        """The same geometry (resize, crop) for one-channel masks, without normalisation."""
        return Preprocess(self.input_size, 1, [0.0], [1.0], resize=self.resize, crop=self.crop)

    def describe(self) -> dict[str, Any]:
        """The preprocessing as plain builtins (``audit.json``'s ``preprocessing``)."""
        return {
            "input_size": list(self.input_size),
            "resize": self.resize,
            "crop": self.crop,
            "channels": self.channels,
            "channel_order": self.channel_order,
            "grayscale": self.grayscale,
            "mean": [round(float(v), 6) for v in self.mean.flatten()],
            "std": [round(float(v), 6) for v in self.std.flatten()],
        }

    def to_unit(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """Resize, crop and adapt channels: ``[channels, H, W]`` in [0, 1], not normalised."""
        x = pil_to_tensor(image) if isinstance(image, Image.Image) else image.float()
        if self.grayscale:
            x = to_channels(x, 1)
        x = to_channels(x, self.channels)
        height, width = self.input_size
        h, w = x.shape[-2:]
        if (h, w) != (height, width) or self.crop < 1.0:
            # Crop the source to the region the output shows first, then resize: the same
            # picture as "resize, then centre crop", but the intermediate never exceeds the
            # source. (Resizing first made a 1 x 30000 strip into 224 x 6.7M floats: 18 GB.)
            scale_h, scale_w = height / (self.crop * h), width / (self.crop * w)
            if self.resize == "cover":
                scale_h = scale_w = max(scale_h, scale_w)
            crop_h = min(h, max(1, round(height / scale_h)))
            crop_w = min(w, max(1, round(width / scale_w)))
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            x = x[:, top : top + crop_h, left : left + crop_w]
            if (crop_h, crop_w) != (height, width):
                x = F.interpolate(
                    x[None],
                    size=(height, width),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )[0]
        return x.clamp(0, 1)

    def _order(self, x: torch.Tensor) -> torch.Tensor:
        """RGB <-> BGR (its own inverse); identity for ``rgb`` or one channel."""
        if self.channel_order == "bgr" and x.shape[-3] == 3:
            return x.flip(-3)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Channel order, then mean/std normalisation of ``[..., C, H, W]`` in [0, 1]."""
        return (self._order(x) - self.mean.to(x.device)) / self.std.to(x.device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`normalize` for display: ``[..., C, H, W]`` back to RGB in [0, 1]."""
        return self._order(x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        return self.normalize(self.to_unit(image))


def preprocessing_summary(pre: dict[str, Any]) -> str:
    """One line that states a ``preprocessing`` section (the run's summary, the report).

    >>> preprocessing_summary({"input_size": [64, 64], "resize": "cover", "crop": 1.0,
    ...     "channels": 3, "channel_order": "rgb", "grayscale": False,
    ...     "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "assumed": []})
    '64x64 RGB, resize cover, mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25]'
    """
    h, w = pre["input_size"]
    colour = "grey" if pre["channels"] == 1 else pre["channel_order"].upper()
    if pre.get("grayscale") and pre["channels"] != 1:
        colour += " (grey images)"
    parts = [f"{h}x{w} {colour}", f"resize {pre['resize']}"]
    if pre.get("crop", 1.0) < 1.0:
        parts[-1] += f", centre crop {pre['crop']:g}"

    def nums(values: list[float]) -> str:
        return "[" + ", ".join(f"{v:g}" for v in values) + "]"

    parts += [f"mean {nums(pre['mean'])}", f"std {nums(pre['std'])}"]
    text = ", ".join(parts)
    assumed = pre.get("assumed") or []
    if assumed:
        text += f" (assumed, not stated: {', '.join(assumed)})"
    return text


def size_mismatch_hint(
    correct: int,
    n: int,
    num_classes: int,
    native_size: tuple[int, int] | None,
    input_size: tuple[int, int],
    *,
    stated: bool = False,
) -> str | None:
    """A warning when accuracy is at chance level and the data's size differs from the model's.

    "At chance level" means ``correct / n`` is not above ``1 / num_classes`` by two standard
    errors of a guess (``2 * sqrt(p (1 - p) / n)``). Returns ``None`` when the accuracy is
    above that, when the sizes agree or when fewer than 8 images were seen. ``stated``: the
    model's input size was given (by its checkpoint or a flag), not assumed; the advice is then
    to check the rest of the preprocessing rather than to state the size.
    """
    if n < 8 or num_classes < 2 or native_size is None:
        return None
    native = (int(native_size[0]), int(native_size[1]))
    if native == tuple(input_size):
        return None
    chance = 1.0 / num_classes
    if correct / n > chance + 2.0 * math.sqrt(chance * (1.0 - chance) / n):
        return None
    facts = (
        f"accuracy on the first {n} images is {correct / n:.1%}, at chance level "
        f"({chance:.1%} for {num_classes} classes), and the images are "
        f"{native[0]}x{native[1]} while the model input is {input_size[0]}x{input_size[1]}"
    )
    if stated:
        return (
            f"{facts} (as its checkpoint or --input-size states). Check that the images are "
            "prepared as in training (--resize, --crop, --mean, --std, --channel-order, "
            "--grayscale) and that the labels match the model's classes."
        )
    return (
        f"{facts}. If the model was trained at {native[0]} px, pass --input-size {native[0]} "
        "(or store the input size in its checkpoint)."
    )
