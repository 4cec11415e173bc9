"""Image parameterizations: what the optimizer changes, and how that becomes an image in [0, 1].

Two parameterizations (Olah et al. 2017, "Feature Visualization"; Lucid/Lucent):

- ``pixel``: one free value per pixel and channel.
- ``fft``: the image's 2-D Fourier spectrum, scaled by ``1/f`` so that every frequency starts
  with about the same energy as in natural images. Gradient ascent then does not pile up high
  frequencies, which is what makes the images readable.

For three-channel images the values are first read in a decorrelated colour basis (the square
root of the ImageNet colour covariance), then mapped to RGB. Every parameterization ends with a
sigmoid, so images are always in [0, 1]. Grayscale (one channel) and other channel counts skip
the colour step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from reporter.errors import ReporterError

__all__ = ["PARAMS", "ImageParam", "fft_image", "image_param", "pixel_image", "to_valid_image"]

PARAMS = ("fft", "pixel")

# Square root of the ImageNet colour covariance (Lucid's ``color_correlation_svd_sqrt``).
_COLOR_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR_NORMALIZED = _COLOR_SVD_SQRT / _COLOR_SVD_SQRT.norm(dim=0).max()


class ImageParam:
    """The optimized tensors and the function turning them into images.

    Attributes:
        params: Leaf tensors (``requires_grad=True``) for the optimizer.
        image_f: Returns the images, ``[K, C, H, W]`` in [0, 1].
    """

    def __init__(self, params: list[torch.Tensor], image_f: Callable[[], torch.Tensor]) -> None:
        self.params = params
        self.image_f = image_f

    def __call__(self) -> torch.Tensor:
        """Return the current images, ``[K, C, H, W]`` in [0, 1]."""
        return self.image_f()


def _randn(shape: tuple[int, ...], sd: float, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU so that a seed gives the same start on every device.
    return torch.randn(shape, generator=generator) * sd


def _decorrelate(image: torch.Tensor) -> torch.Tensor:
    matrix = _COLOR_NORMALIZED.to(device=image.device, dtype=image.dtype)
    return torch.einsum("bchw,dc->bdhw", image, matrix)


def to_valid_image(
    image_f: Callable[[], torch.Tensor], *, decorrelate: bool = True
) -> Callable[[], torch.Tensor]:
    """Wrap ``image_f`` so it returns [0, 1] images, read in the decorrelated colour basis.

    The colour step applies to three-channel images only.
    """

    def inner() -> torch.Tensor:
        image = image_f()
        if decorrelate and image.shape[1] == 3:
            image = _decorrelate(image)
        return torch.sigmoid(image)

    return inner


def pixel_image(
    shape: tuple[int, int, int, int],
    *,
    sd: float = 0.01,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
    """Plain pixel values, ``shape = (K, C, H, W)``; returns ``(params, raw_image_f)``."""
    tensor = _randn(shape, sd, generator).to(device).requires_grad_(True)
    return [tensor], lambda: tensor


def _freqs(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def fft_image(
    shape: tuple[int, int, int, int],
    *,
    sd: float = 0.01,
    decay_power: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
    """A Fourier-space image with ``1/f**decay_power`` scaling; returns ``(params, raw_image_f)``.

    Args:
        shape: ``(K, C, H, W)``.
        sd: Standard deviation of the initial spectrum.
        decay_power: Exponent of the frequency scaling (1 = natural-image statistics).
        generator: Seeded generator for the initial values.
        device: Where the parameters live.
    """
    batch, channels, h, w = shape
    freqs = _freqs(h, w)
    spectrum = _randn((batch, channels, *freqs.shape, 2), sd, generator)
    spectrum = spectrum.to(device).requires_grad_(True)
    scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
    scale = scale[None, None, ..., None].to(device)

    def inner() -> torch.Tensor:
        scaled = torch.view_as_complex((scale * spectrum).contiguous())
        image = torch.fft.irfft2(scaled, s=(h, w), norm="ortho")
        return image / 4.0  # Lucid's "magic" constant: keeps the sigmoid out of saturation

    return [spectrum], inner


def image_param(
    kind: str,
    batch: int,
    channels: int,
    size: int | tuple[int, int],
    *,
    decorrelate: bool = True,
    sd: float = 0.01,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> ImageParam:
    """Build a parameterization of ``batch`` images of ``channels`` x ``size``.

    Args:
        kind: ``"fft"`` or ``"pixel"``.
        batch: Number of images (one per optimized unit).
        channels: Image channels (1 for grayscale models, 3 for RGB).
        size: ``H`` (square) or ``(H, W)``.
        decorrelate: Use the decorrelated colour basis for three-channel images.
        sd: Standard deviation of the initial values.
        generator: Seeded generator for the initial values.
        device: Where the parameters live.

    Raises:
        ReporterError: for an unknown ``kind`` or a non-positive size.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1 or batch < 1 or channels < 1:
        raise ReporterError(
            f"Image size, batch and channels must be >= 1, got {batch}x{channels}x{h}x{w}."
        )
    shape = (batch, channels, h, w)
    if kind == "fft":
        params, raw = fft_image(shape, sd=sd, generator=generator, device=device)
    elif kind == "pixel":
        params, raw = pixel_image(shape, sd=sd, generator=generator, device=device)
    else:
        raise ReporterError(
            f"Unknown parameterization {kind!r}; choose one of {', '.join(PARAMS)}."
        )
    return ImageParam(params, to_valid_image(raw, decorrelate=decorrelate))
