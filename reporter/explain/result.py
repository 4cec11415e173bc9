"""What the engine returns (:class:`CamResult`) and the display helpers for its maps.

The one min-max normalisation of the project (:func:`normalize_maps`) lives here; Score-CAM's
masks and the feature-visualization colour maps use it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from reporter.errors import ReporterError
from reporter.nn.layers import token_grid

__all__ = ["CamResult", "as_grid", "normalize_maps", "tokens_to_grid", "upsample_maps"]


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map to ``[0, 1]``; NaN/inf become 0 and constant maps become 0.

    Args:
        maps: ``[..., H, W]`` maps (any leading axes).

    Returns:
        A new float tensor of the same shape.
    """
    x = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, (flat - lo) / safe, torch.zeros_like(flat))
    return out.reshape(x.shape)


def _size_keeping_aspect(size: int | Sequence[int], input_size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        height, width = input_size
        short = min(height, width)
        return max(1, round(height * size / short)), max(1, round(width * size / short))
    h, w = (int(s) for s in size)
    return h, w


def upsample_maps(maps: Tensor, size: int | Sequence[int]) -> Tensor:
    """Bilinearly upsample maps ``[B, h, w]`` (or ``[h, w]``) to ``size``.

    Args:
        maps: Maps at the layer's resolution.
        size: ``(H, W)``, or an int for the shorter side (the longer follows the maps' aspect).

    Returns:
        Float maps ``[B, H, W]`` (``[H, W]`` for a single map). Uses half-pixel centres
        (``align_corners=False``), like OpenCV's ``resize``.
    """
    single = maps.dim() == 2
    x = maps.float().reshape(-1, 1, maps.shape[-2], maps.shape[-1])
    target = _size_keeping_aspect(size, (int(maps.shape[-2]), int(maps.shape[-1])))
    if target != (int(x.shape[-2]), int(x.shape[-1])):
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
    x = x[:, 0]
    return x[0] if single else x


def tokens_to_grid(tokens: Tensor, input_size: tuple[int, int]) -> Tensor:
    """Reshape transformer tokens ``[B, 1+N, C]`` or ``[B, N, C]`` to ``[B, C, gh, gw]``.

    The class token (when ``N + 1`` tokens fit the patch grid) is dropped; the grid follows from
    the token count and the input size (:func:`reporter.nn.layers.token_grid`).

    Raises:
        ReporterError: when the token count matches no patch grid of ``input_size``.
    """
    grid = token_grid(int(tokens.shape[1]), input_size)
    if grid is None:
        raise ReporterError(
            f"Cannot map {tokens.shape[1]} tokens onto a patch grid of an input of size "
            f"{input_size}; choose a layer with a spatial output."
        )
    gh, gw, has_cls = grid
    body = tokens[:, 1:] if has_cls else tokens
    return body.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)


def as_grid(tensor: Tensor, input_size: tuple[int, int]) -> Tensor:
    """A hooked layer's output as ``[B, C, h, w]`` (token sequences reshaped onto their grid)."""
    if tensor.dim() == 4:
        return tensor
    if tensor.dim() == 3:
        return tokens_to_grid(tensor, input_size)
    raise ReporterError(f"A hooked layer produced shape {tuple(tensor.shape)}, not [B, C, h, w].")


@dataclass
class CamResult:
    """What one :class:`CamEngine` call returns. Everything public is on the CPU.

    Attributes:
        maps: ``maps[method][layer]`` is a float tensor ``[B, h, w]`` at the layer's resolution,
            after the method's ReLU, not normalised.
        flags: ``flags[method][layer]`` is a bool tensor ``[B]``, True where the map is all zero
            or holds NaN/inf (such a map must not be drawn as if it were a real, blank answer).
        logits: The model's output ``[B, K]`` from the same forward pass.
        targets: The explained class of each image, ``[B]`` long.
        input_size: ``(H, W)`` of the input images.
        layers: The resolved layer names, in the requested order (``auto`` and in-place outputs
            resolved), which key ``maps[method]``.
    """

    maps: dict[str, dict[str, Tensor]]
    flags: dict[str, dict[str, Tensor]]
    logits: Tensor
    targets: Tensor
    input_size: tuple[int, int]
    layers: list[str]
    _raw_activations: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _raw_gradients: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _cpu_activations: dict[str, Tensor] | None = field(default=None, repr=False)
    _cpu_gradients: dict[str, Tensor] | None = field(default=None, repr=False)

    @property
    def methods(self) -> list[str]:
        """The computed method names."""
        return list(self.maps)

    @property
    def predictions(self) -> Tensor:
        """The predicted class of each image, ``[B]``."""
        return self.logits.argmax(dim=1)

    @property
    def activations(self) -> dict[str, Tensor]:
        """Detached CPU activations ``[B, C, h, w]`` of every hooked layer (``record`` too).

        Copied from the device on first access only.
        """
        if self._cpu_activations is None:
            self._cpu_activations = {k: v.cpu() for k, v in self._raw_activations.items()}
        return self._cpu_activations

    @property
    def gradients(self) -> dict[str, Tensor]:
        """Detached CPU gradients of the target scores, like :attr:`activations`.

        Empty when no backward pass ran (only gradient-free methods and no ``record`` layers).
        """
        if self._cpu_gradients is None:
            self._cpu_gradients = {k: v.cpu() for k, v in self._raw_gradients.items()}
        return self._cpu_gradients

    def upsampled(
        self,
        method: str,
        layer: str,
        size: int | Sequence[int] | None = None,
        normalize: bool = True,
    ) -> Tensor:
        """A map upsampled (bilinear) to the input size or ``size``, normalised per image.

        Args:
            method: A computed method name.
            layer: A resolved layer name (see :attr:`layers`).
            size: ``(H, W)``; an int for the shorter side with the input's aspect ratio kept;
                ``None`` for the input size.
            normalize: Min-max normalise each map to ``[0, 1]`` (NaN-safe).

        Returns:
            ``[B, H, W]`` float maps.
        """
        try:
            maps = self.maps[method][layer]
        except KeyError:
            raise ReporterError(
                f"No map for method {method!r} and layer {layer!r}; computed methods: "
                f"{', '.join(self.maps)}; layers: {', '.join(self.layers)}."
            ) from None
        target = self.input_size if size is None else _size_keeping_aspect(size, self.input_size)
        out = upsample_maps(maps, target)
        return normalize_maps(out) if normalize else out

    def to_html(self, images: Tensor | None = None, cmap: str = "viridis") -> str:
        """HTML of the maps (first layer) over ``images`` ``[B, C, H, W]`` in [0, 1], if given."""
        from reporter.notebook import cam_result_html

        return cam_result_html(self, None if images is None else images.cpu().numpy(), cmap)

    def _repr_html_(self) -> str:
        """Jupyter's view: each method's map for the first images, with the predictions."""
        return self.to_html()
