"""Views of units computed from data, streamed during the audit pass (no second pass).

- :class:`TopKActivations`: for each channel, the k images that activate it most and where.
- :func:`receptive_field` and :class:`ReceptiveField`: the input region a feature-map position
  sees, to crop the top examples around their maximum.
- :class:`ClassChannelRelevance`: per class, the mean contribution (gradient x activation summed
  over positions) of each channel, so the report can show the features that drive each class.
- :func:`filter_grid`: first-layer filter weights as an image grid.
- :func:`activation_maps`: a layer's feature maps for one image (the "intermediate outputs" view).
- :func:`layer_gradients`: activations and gradients of a layer for given targets, when the CAM
  engine's gradients (for the predicted class) are not the ones wanted.

Accumulators hold only ``channels x k`` (or ``classes x channels``) numbers, never the dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reporter.errors import ReporterError
from reporter.featvis._forward import StopForward, stop_after
from reporter.nn.device import model_device
from reporter.nn.hooks import (
    ActivationRecorder,
    eval_mode,
    frozen_parameters,
    unknown_layer_message,
)

__all__ = [
    "ClassChannelRelevance",
    "ReceptiveField",
    "TopKActivations",
    "TopKExample",
    "activation_maps",
    "filter_grid",
    "layer_gradients",
    "receptive_field",
]


def _as_index_tensor(indices: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
    if idx.numel() != n:
        raise ValueError(f"Got {idx.numel()} indices for a batch of {n}.")
    return idx


@dataclass(frozen=True)
class TopKExample:
    """One top-activating example of a channel.

    Attributes:
        index: The image's index in the dataset (as passed to ``update``).
        value: The channel's maximum activation on that image.
        y: Row of the maximum in the feature map.
        x: Column of the maximum in the feature map.
    """

    index: int
    value: float
    y: int
    x: int


class TopKActivations:
    """Streaming top-k: the k images that activate each channel most, and where.

    An image's score for a channel is the maximum of the channel's feature map; its position is
    recorded to crop the receptive field around it (:meth:`ReceptiveField.box`).

    Args:
        layer: The layer's name (kept for the report).
        channels: Channel indices to track; ``None`` tracks all (known at the first update).
        k: Examples kept per channel.
    """

    def __init__(self, layer: str, channels: Iterable[int] | None = None, k: int = 9) -> None:
        if k < 1:
            raise ReporterError(f"k must be >= 1, got {k}.")
        self.layer = layer
        self.k = k
        self.channels: list[int] | None = None if channels is None else [int(c) for c in channels]
        self.feature_size: tuple[int, int] | None = None
        self.values = torch.empty(0, 0)
        self.indices = torch.empty(0, 0, dtype=torch.long)
        self.positions = torch.empty(0, 0, dtype=torch.long)
        self.seen = 0

    def update(self, activations: torch.Tensor, indices: torch.Tensor | Sequence[int]) -> None:
        """Add one batch.

        Args:
            activations: The layer's output ``[B, C, h, w]`` (or ``[B, C]``) for the batch.
            indices: ``[B]`` dataset indices of the batch's images.
        """
        a = activations.detach()
        if a.dim() == 2:
            a = a[:, :, None, None]
        if a.dim() != 4:
            raise ReporterError(
                f"Top-k activations need a [B, C, h, w] layer output; {self.layer!r} gives "
                f"{tuple(a.shape)}."
            )
        b, c, h, w = a.shape
        idx = _as_index_tensor(indices, b)
        if self.channels is None:
            self.channels = list(range(c))
        bad = [ch for ch in self.channels if not 0 <= ch < c]
        if bad:
            raise ReporterError(
                f"Channel {bad[0]} is out of range for layer {self.layer!r} with {c} channels."
            )
        n = len(self.channels)
        if self.values.numel() == 0 and self.values.shape[0] != n:
            self.values = torch.empty(n, 0)
            self.indices = torch.empty(n, 0, dtype=torch.long)
            self.positions = torch.empty(n, 0, dtype=torch.long)
        self.feature_size = (h, w)
        chans = torch.tensor(self.channels, device=a.device)
        best, pos = a.index_select(1, chans).flatten(2).max(2)  # [B, n]
        values = torch.cat([self.values, best.T.float().cpu()], dim=1)
        cand_idx = torch.cat([self.indices, idx[None].expand(n, b)], dim=1)
        cand_pos = torch.cat([self.positions, pos.T.cpu()], dim=1)
        # stable: among equal values the earlier candidate (kept before new, then batch order)
        # wins, so the images kept do not depend on how the data was split (distributed runs)
        keep = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values = values.gather(1, keep)
        self.indices = cand_idx.gather(1, keep)
        self.positions = cand_pos.gather(1, keep)
        self.seen += b

    def examples(self, channel: int) -> list[TopKExample]:
        """The top examples of ``channel``, most activating first."""
        if self.channels is None or channel not in self.channels:
            raise KeyError(f"channel {channel} is not tracked for layer {self.layer!r}")
        row = self.channels.index(channel)
        w = self.feature_size[1] if self.feature_size else 1
        return [
            TopKExample(int(i), float(v), int(p) // w, int(p) % w)
            for i, v, p in zip(
                self.indices[row].tolist(),
                self.values[row].tolist(),
                self.positions[row].tolist(),
                strict=True,
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"layer", "k", "feature_size", "channels": {c: [examples]}}``."""
        return {
            "layer": self.layer,
            "k": self.k,
            "feature_size": list(self.feature_size) if self.feature_size else None,
            "channels": {
                str(c): [e.__dict__ for e in self.examples(c)] for c in (self.channels or [])
            },
        }


@dataclass(frozen=True)
class ReceptiveField:
    """Where a layer's feature-map positions look in the input.

    Attributes:
        size: ``(rh, rw)`` extent of one position's receptive field in input pixels.
        stride: ``(sy, sx)`` input pixels per feature-map step.
        offset: ``(oy, ox)``: the centre of position ``(y, x)`` is at
            ``(y * sy + oy, x * sx + ox)`` in input pixels (pixel ``i`` spans ``[i, i + 1)``).
        input_size: ``(H, W)`` of the input.
        feature_size: ``(h, w)`` of the layer's output.
    """

    size: tuple[float, float]
    stride: tuple[float, float]
    offset: tuple[float, float]
    input_size: tuple[int, int]
    feature_size: tuple[int, int]

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """The crop ``(top, left, bottom, right)`` (exclusive ends) around position ``(y, x)``.

        The box is centred on the position's centre and clipped to the image.
        """
        height, width = self.input_size
        cy = y * self.stride[0] + self.offset[0]
        cx = x * self.stride[1] + self.offset[1]
        top = max(0, round(cy - self.size[0] / 2))
        left = max(0, round(cx - self.size[1] / 2))
        bottom = min(height, max(top + 1, round(cy + self.size[0] / 2)))
        right = min(width, max(left + 1, round(cx + self.size[1] / 2)))
        return top, left, bottom, right

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "size": list(self.size),
            "stride": list(self.stride),
            "offset": list(self.offset),
            "input_size": list(self.input_size),
            "feature_size": list(self.feature_size),
        }


def _span(mask: torch.Tensor) -> tuple[int, int] | None:
    hits = torch.nonzero(mask).reshape(-1)
    if hits.numel() == 0:
        return None
    return int(hits.min()), int(hits.max()) + 1


def _extent(
    span: tuple[int, int] | None, position: int, stride: float, length: int
) -> tuple[float, float]:
    """``(size, offset)`` along one axis from the support ``span`` of ``position``."""
    if span is None:
        return 1.0, stride / 2
    lo, hi = span
    if lo > 0 and hi < length:
        return float(hi - lo), (lo + hi) / 2 - position * stride
    centre = (position + 0.5) * stride  # clipped: assume the field is centred on the cell
    if lo == 0 and hi == length:
        return float(2 * length), stride / 2
    return 2.0 * max(centre - lo, hi - centre), stride / 2


def _layer_output(
    model: nn.Module, layer: str, x: torch.Tensor, module: nn.Module
) -> torch.Tensor | None:
    with ActivationRecorder(model, [layer]) as recorder, stop_after(module):
        with suppress(StopForward):
            model(x)
        return recorder.outputs.get(layer)


def receptive_field(
    model: nn.Module,
    layer: str,
    input_size: tuple[int, int],
    *,
    image_channels: int = 3,
    device: torch.device | str | None = None,
    seed: int = 0,
    probe_scale: int = 3,
) -> ReceptiveField:
    """Measure a layer's receptive field from the gradient of one output position.

    The gradient of the centre position (summed over channels) with respect to random inputs is
    non-zero exactly on the pixels that position sees; its bounding box gives the extent and the
    centre offset. The probe input is ``probe_scale`` times the input size so that the field
    fits inside it (the forward pass stops at ``layer``, so later layers need not accept the
    size); a field that still reaches the border is taken as centred on its cell. A model that
    does not run up to ``layer`` at that size (it checks its input size) is probed at its input
    size instead.

    Args:
        model: The model (restored afterwards).
        layer: Dotted layer name.
        input_size: ``(H, W)`` of the model's input.
        image_channels: Input channels.
        device: Where to run; defaults to the model's device.
        seed: Seed of the random probe inputs.
        probe_scale: Size of the probe input relative to ``input_size``.
    """
    height, width = input_size
    if device is None:
        device = model_device(model)
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise ReporterError(unknown_layer_message(model, layer))
    gen = torch.Generator().manual_seed(seed)
    ph, pw = height * probe_scale, width * probe_scale
    probe = torch.randn(2, image_channels, ph, pw, generator=gen).to(device).requires_grad_(True)
    with eval_mode(model), frozen_parameters(model), torch.enable_grad():
        with torch.no_grad():
            real = _layer_output(
                model, layer, torch.zeros(1, image_channels, height, width, device=device), module
            )
        try:
            out = _layer_output(model, layer, probe, module)
        except Exception:  # retried at the input size, which ran above (raised again there)
            if probe_scale == 1:
                raise
            return receptive_field(
                model,
                layer,
                input_size,
                image_channels=image_channels,
                device=device,
                seed=seed,
                probe_scale=1,
            )
        if real is None or out is None or out.dim() != 4 or real.dim() != 4:
            raise ReporterError(f"Layer {layer!r} has no [B, C, h, w] output.")
        h, w = out.shape[-2:]
        cy, cx = h // 2, w // 2
        (grad,) = torch.autograd.grad(out[:, :, cy, cx].sum(), probe)
    support = grad.abs().sum(dim=(0, 1)) > 0  # [ph, pw]
    rh, oy = _extent(_span(support.any(dim=1)), cy, ph / h, ph)
    rw, ox = _extent(_span(support.any(dim=0)), cx, pw / w, pw)
    fh, fw = int(real.shape[-2]), int(real.shape[-1])
    return ReceptiveField(
        size=(rh, rw),
        stride=(height / fh, width / fw),
        offset=(oy, ox),
        input_size=(height, width),
        feature_size=(fh, fw),
    )


class ClassChannelRelevance:
    """Per class, the mean contribution of each channel of one layer to the class score.

    An image's contribution of channel ``k`` is ``sum_ij G_k A_k`` with ``G = d y_label / d A``:
    the first-order (gradient x activation) share of channel ``k`` in the score of the image's
    own class. For a global-average-pooling head this is exactly ``W[c, k] * mean(A_k)``.
    Contributions are averaged over the images of each class.

    Args:
        num_classes: Number of classes.
        channels: Number of channels of the layer.
    """

    def __init__(self, num_classes: int, channels: int) -> None:
        if num_classes < 1 or channels < 1:
            raise ReporterError("num_classes and channels must be >= 1.")
        self.num_classes = num_classes
        self.channels = channels
        self.sums = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.long)

    def update(
        self,
        activations: torch.Tensor,
        gradients: torch.Tensor,
        labels: torch.Tensor | Sequence[int],
    ) -> None:
        """Add one batch.

        Args:
            activations: ``[B, C, h, w]`` (or ``[B, C]``) layer output.
            gradients: Same shape: gradient of each image's label logit w.r.t. the output.
            labels: ``[B]`` class indices.
        """
        a, g = activations.detach(), gradients.detach()
        if a.shape != g.shape:
            raise ValueError(f"activations {tuple(a.shape)} and gradients {tuple(g.shape)} differ")
        if a.shape[1] != self.channels:
            raise ReporterError(
                f"Expected {self.channels} channels, the layer output has {a.shape[1]}."
            )
        lab = _as_index_tensor(labels, a.shape[0])
        if lab.numel() and (lab.min() < 0 or lab.max() >= self.num_classes):
            raise ReporterError(f"Labels must be in 0..{self.num_classes - 1}.")
        contrib = (g * a).reshape(a.shape[0], a.shape[1], -1).sum(2).double().cpu()
        self.sums.index_add_(0, lab, contrib)
        self.counts += torch.bincount(lab, minlength=self.num_classes)

    @property
    def mean(self) -> torch.Tensor:
        """``[num_classes, channels]`` mean contributions (zero for classes with no images)."""
        return self.sums / self.counts.clamp_min(1)[:, None].double()

    def top(self, class_idx: int, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` channels with the largest mean contribution to ``class_idx``.

        Returns:
            ``[(channel, mean contribution), ...]``, largest first.
        """
        if not 0 <= class_idx < self.num_classes:
            raise ReporterError(f"Class {class_idx} is out of range 0..{self.num_classes - 1}.")
        values, idx = self.mean[class_idx].topk(min(n, self.channels))
        return [(int(i), float(v)) for i, v in zip(idx.tolist(), values.tolist(), strict=True)]

    def to_dict(self, n: int = 5) -> dict[str, Any]:
        """JSON-ready: counts per class and the top ``n`` channels of each class."""
        return {
            "counts": self.counts.tolist(),
            "top": {
                str(c): [{"channel": ch, "relevance": v} for ch, v in self.top(c, n)]
                for c in range(self.num_classes)
                if self.counts[c] > 0
            },
        }


def layer_gradients(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's output and the gradient of each image's target logit with respect to it.

    One forward and one :func:`torch.autograd.grad`; the model is restored afterwards.

    Returns:
        ``(activations, gradients)``, both detached, shaped like the layer's output.
    """
    try:
        recorder = ActivationRecorder(model, [layer])
    except KeyError as exc:
        raise ReporterError(str(exc.args[0])) from None
    tgt = torch.as_tensor(targets, dtype=torch.long, device=images.device).reshape(-1)
    # With frozen parameters the graph starts at the input, so the input must require grad.
    x = images.detach().requires_grad_(True)
    with eval_mode(model), frozen_parameters(model), recorder, torch.enable_grad():
        logits = model(x)
        acts = recorder.outputs[layer]
        score = logits.gather(1, tgt[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts)
    return acts.detach(), grads.detach()


def filter_grid(
    weight: torch.Tensor | nn.Module,
    *,
    nrow: int | None = None,
    cell: int = 24,
    padding: int = 1,
) -> torch.Tensor:
    """First-layer filter weights as one image grid.

    Each filter is scaled on its own so that zero is mid-grey and its largest absolute weight
    reaches black or white. Three-input-channel filters are shown in colour; others as the
    mean over input channels, in grey.

    Args:
        weight: A convolution's weight ``[out, in, kh, kw]`` or the convolution itself.
        nrow: Filters per row; default about the square root of the count.
        cell: Minimum size in pixels of one filter (nearest-neighbour upscaling).
        padding: Pixels between filters.

    Returns:
        ``[C, H, W]`` float tensor in [0, 1] (C = 3 for RGB filters, else 1).
    """
    from torchvision.utils import make_grid

    w = weight.weight if isinstance(weight, nn.Module) else weight
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        raise ReporterError("filter_grid needs a convolution weight [out, in, kh, kw].")
    w = w.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(dim=1, keepdim=True)
    peak = w.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    w = w / (2 * peak) + 0.5
    factor = max(1, -(-cell // max(w.shape[-2:])))
    w = w.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    nrow = nrow or max(1, round(w.shape[0] ** 0.5))
    grid = make_grid(w, nrow=nrow, padding=padding, pad_value=1.0)
    return grid[:1] if w.shape[1] == 1 else grid


def activation_maps(
    model: nn.Module,
    image: torch.Tensor,
    layers: Sequence[str] | str,
) -> dict[str, torch.Tensor]:
    """The feature maps of one (normalized) image at each layer.

    Args:
        model: The model (restored afterwards).
        image: ``[C, H, W]`` or ``[1, C, H, W]``, normalized as the model expects.
        layers: Dotted layer names.

    Returns:
        ``{layer: [C, h, w] tensor}`` on the CPU (``[C]`` for layers without a spatial grid).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ReporterError(f"activation_maps needs one image [C, H, W], got {tuple(image.shape)}.")
    try:
        recorder = ActivationRecorder(model, names, detach=True)
    except KeyError as exc:
        raise ReporterError(str(exc.args[0])) from None
    with eval_mode(model), recorder, torch.no_grad():
        model(x)
        missing = [n for n in names if n not in recorder.outputs]
        if missing:
            raise ReporterError(f"Layer {missing[0]!r} did not run in the forward pass.")
        return {n: recorder.outputs[n][0].cpu().clone() for n in names}
