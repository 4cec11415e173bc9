"""The feature-visualization stage: what the filters of the chosen layers respond to.

For each featvis layer: the channels most relevant to each class (from the stream pass's
gradient x activation sums), their activation-maximization renders, and the dataset crops that
activate them most (cut to the channel's receptive field). Also the first convolution's filters
and the activation maps of one confidently classified image at a few depths.

The renders are made at ``featvis_size`` (:func:`render_size`; ``auto``: the model's input
size with its longer side capped at :data:`AUTO_SIDE` pixels), or at the input size, with every
transformed image resized back to it, when the model does not run up to the layer at other
sizes (:func:`reporter.featvis.render.fit_size`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from reporter.audit.explanations import source_of
from reporter.audit.results import SectionResult, uint8_images
from reporter.audit.stream import StreamResult
from reporter.config import AuditConfig
from reporter.featvis import activation_maps, filter_grid, receptive_field, render
from reporter.featvis.grids import colorize, crop, image_grid
from reporter.featvis.render import fit_size
from reporter.nn.device import model_device
from reporter.progress import step_progress
from reporter.setup import Prepared

__all__ = [
    "AUTO_SIDE",
    "MIN_ACTIVATION",
    "MIN_CONTRAST",
    "feature_visualization",
    "first_conv",
    "render_size",
    "render_status",
]

log = logging.getLogger(__name__)

AUTO_SIDE = 128
"""``featvis_size = "auto"``: renders are at most this many pixels on their longer side (the
size of ``reporter featvis`` and Lucent; a 224 px render of a resnet18 takes 2.5 times as
long: ``benchmarks/bench_featvis.py --resnet18``)."""


def render_size(input_size: Sequence[int], setting: int | str) -> tuple[int, int]:
    """The ``(H, W)`` of the activation-maximization renders for a model of ``input_size``.

    ``setting`` is the ``featvis_size`` of the configuration: ``"auto"`` (the input size, its
    longer side capped at :data:`AUTO_SIDE`) or the longer side in pixels. The aspect ratio of
    the input is kept.

    >>> render_size((224, 224), "auto"), render_size((32, 32), "auto")
    ((128, 128), (32, 32))
    >>> render_size((224, 320), "auto"), render_size((224, 224), 96)
    ((90, 128), (96, 96))
    """
    h, w = int(input_size[0]), int(input_size[1])
    side = min(AUTO_SIDE, max(h, w)) if setting == "auto" else int(setting)
    if side == max(h, w):
        return h, w
    scale = side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def first_conv(model: nn.Module) -> str | None:
    """Name of the first ``nn.Conv2d`` (for the filter grid)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    return None


def _channel_order(
    stream: StreamResult, layer: str, tracked: list[int], config: AuditConfig, names: list[str]
) -> tuple[list[int], dict[str, list[dict[str, float]]]]:
    """Channels to render: each class's most relevant first, then the strongest, to a budget.

    ``tracked`` are the channels the layer's top-k tracker holds (``topk.channels``).
    """
    relevance = stream.relevance.get(layer)
    topk = stream.topk[layer]
    per_class: dict[str, list[dict[str, float]]] = {}
    order: list[int] = []
    if relevance is not None:
        tops = {c: relevance.top(c, 3) for c in range(len(names)) if relevance.counts[c] > 0}
        for c, top in tops.items():
            per_class[names[c]] = [{"channel": ch, "relevance": v} for ch, v in top]
        for rank in range(3):
            for c in sorted(tops):
                if rank < len(tops[c]) and tops[c][rank][0] not in order:
                    order.append(tops[c][rank][0])
        order = order[: max(config.featvis_channels, min(len(tops), 16))]
    if len(order) < config.featvis_channels:
        n_channels = len(tracked)
        scores = topk.values[:, 0] if topk.values.numel() else torch.zeros(n_channels)
        for i in torch.argsort(scores, descending=True).tolist():
            ch = tracked[i]
            if ch not in order:
                order.append(ch)
            if len(order) >= config.featvis_channels:
                break
    return order, per_class


MIN_ACTIVATION = 1e-3
"""A render whose channel activation ends at or below this did not excite the channel."""
MIN_CONTRAST = 0.01
"""A render whose pixels' standard deviation (in [0, 1]) is below this is a flat image."""


def render_status(start: float, end: float, image: torch.Tensor) -> tuple[str, str | None]:
    """``("converged", None)`` or ``("failed", reason)`` for one activation-maximization render:
    failed when the activation ends at or below :data:`MIN_ACTIVATION` or did not rise, or
    the image ``[C, H, W]`` in [0, 1] is flat (standard deviation below :data:`MIN_CONTRAST`).
    A failed render is never drawn as a result."""
    if end != end or end <= MIN_ACTIVATION:  # NaN or ~0
        return "failed", f"the activation ends at {end:.2g}: the channel was not excited"
    if end <= start:
        return "failed", f"the activation did not rise ({start:.2g} to {end:.2g})"
    if float(image.float().std()) < MIN_CONTRAST:
        return "failed", "the image is flat"
    return "converged", None


def feature_visualization(
    prep: Prepared, config: AuditConfig, stream: StreamResult
) -> SectionResult:
    """Filters, activation maximization, top-activating examples and class-relevant channels.

    Arrays: ``filters`` (the first convolution's filters as one image), per featvis layer
    ``render_<l>`` ``[n, H, W, 3]`` and ``crop_<l>_<c>_<e>`` (the e-th top example of the c-th
    rendered channel), ``actmap_image`` and ``actmap_<j>`` (colourised activation grids).
    The section names the array of each picture.
    """
    model = prep.loaded.model
    names = list(prep.bundle.class_names)
    result = SectionResult("featvis", {"layers": {}, "filters": None, "activation_maps": None})
    if config.featvis_channels == 0 or not stream.featvis_layers:
        return result
    section, arrays = result.section, result.arrays
    conv = first_conv(model)
    if conv is not None:
        # first_conv named it because it is an nn.Conv2d; get_submodule only says nn.Module
        weight = cast(nn.Conv2d, model.get_submodule(conv)).weight.detach().cpu()
        arrays["filters"] = uint8_images(filter_grid(weight))[0]
        section["filters"] = {
            "layer": conv,
            "count": int(weight.shape[0]),
            "shape": list(weight.shape[1:]),
            "array": "filters",
        }
    with step_progress(
        "feature visualization",
        total=config.featvis_steps * len(stream.featvis_layers),
        enabled=not config.quiet,
    ) as tick:
        _render_layers(prep, config, stream, names, section, arrays, tick)
    _activation_panel(prep, config, stream, section, arrays)
    return result


def _render_layers(
    prep: Prepared,
    config: AuditConfig,
    stream: StreamResult,
    names: list[str],
    section: dict[str, Any],
    arrays: dict[str, np.ndarray],
    tick: Callable[..., None],
) -> None:
    """Render, crop and describe each featvis layer (the body of the featvis stage)."""
    model = prep.loaded.model
    meta = prep.loaded.meta
    for li, layer in enumerate(stream.featvis_layers):
        topk = stream.topk.get(layer)
        if topk is None or topk.channels is None:
            continue
        order, per_class = _channel_order(stream, layer, topk.channels, config, names)
        size, fixed = _layer_size(model, layer, meta.input_size, meta.channels, config)
        rendered = render(
            model,
            layer,
            channels=order,
            size=size,
            steps=config.featvis_steps,
            seed=config.seed,
            mean=meta.mean,
            std=meta.std,
            channel_order=meta.channel_order,
            image_channels=meta.channels,
            trace_size=meta.input_size,
            fixed_size=fixed is not None,
            progress=tick,
        )
        arrays[f"render_{li}"] = uint8_images(rendered.images)
        rf = receptive_field(
            model, layer, meta.input_size, image_channels=meta.channels, seed=config.seed
        )
        channels: dict[str, Any] = {}
        for ci, ch in enumerate(order):
            examples: list[dict[str, Any]] = []
            for ex in topk.examples(ch):
                box = rf.box(ex.y, ex.x)
                try:
                    unit = prep.bundle.test.load_unit(ex.index)
                except Exception:  # noqa: BLE001 - unreadable now: leave the crop out
                    continue
                key = f"crop_{li}_{ci}_{len(examples)}"
                arrays[key] = uint8_images(crop(unit, box))[0]
                examples.append(
                    {
                        "index": ex.index,
                        "source": source_of(prep, ex.index),
                        "activation": ex.value,
                        "box": list(box),
                        "array": key,
                    }
                )
            status, reason = render_status(
                float(rendered.initial[ci]), float(rendered.final[ci]), rendered.images[ci]
            )
            channels[str(ch)] = {
                "objective_start": float(rendered.initial[ci]),
                "objective_end": float(rendered.final[ci]),
                "status": status,
                "reason": reason,
                "top_examples": examples,
                "render": [f"render_{li}", ci],
            }
        section["layers"][layer] = {
            "channels_total": len(topk.channels),
            "rendered": order,
            "steps": config.featvis_steps,
            "size": list(size),
            "fixed_size_reason": fixed,
            "receptive_field": rf.to_dict(),
            "class_channels": per_class,
            "channels": channels,
        }


def _layer_size(
    model: nn.Module,
    layer: str,
    input_size: Sequence[int],
    channels: int,
    config: AuditConfig,
) -> tuple[tuple[int, int], str | None]:
    """The render size of ``layer`` and ``None``, or the input size and why it is held there.

    The size of :func:`render_size` when the model runs up to ``layer`` at it (and at other
    sizes: :func:`~reporter.featvis.render.fit_size`); else the input size, rendered with every
    transformed image resized back to it, and the reason (logged: a warning when
    ``featvis_size`` asked for another size, a note otherwise).
    """
    full = (int(input_size[0]), int(input_size[1]))
    wanted = render_size(full, config.featvis_size)
    size, reason = fit_size(model, layer, wanted, full, image_channels=channels)
    if reason is not None:
        asked = config.featvis_size != "auto" and wanted != full
        log.log(
            logging.WARNING if asked else logging.INFO,
            "Feature visualization of %s at the input size %dx%d, every transformed image "
            "resized back to it: %s.",
            layer,
            *full,
            reason,
        )
    return size, reason


def _activation_panel(
    prep: Prepared,
    config: AuditConfig,
    stream: StreamResult,
    section: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> None:
    """Intermediate activation maps of the most confidently correct image."""
    preds = stream.predictions
    correct = np.flatnonzero((preds.preds == preds.labels) & np.isfinite(preds.probs).all(1))
    if not len(correct) or not stream.layers:
        return
    best = int(correct[np.argmax(preds.confidence[correct])])
    index = int(preds.indices[best])
    x, _, _, _ = prep.bundle.test[index]
    if x is None:
        return
    model = prep.loaded.model
    maps = activation_maps(model, x.to(model_device(model)), _activation_layers(model, stream))
    layers: list[str] = []
    for name, fmap in maps.items():
        if fmap.dim() != 3:
            continue
        # colorize scales each map to [0, 1] on its own
        grid = image_grid(colorize(fmap[:8], config.colormap), nrow=8)
        arrays[f"actmap_{len(layers)}"] = uint8_images(grid)[0]
        layers.append(name)
    arrays["actmap_image"] = uint8_images(prep.bundle.test.load_unit(index))[0]
    section["activation_maps"] = {
        "index": index,
        "source": source_of(prep, index),
        "class": prep.bundle.class_names[int(preds.labels[best])],
        "layers": layers,
    }


def _activation_layers(model: nn.Module, stream: StreamResult) -> list[str]:
    """Up to four conv layers spread over the depth, ending with the CAM layer."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(convs) > 4:
        step = (len(convs) - 1) / 3
        convs = [convs[round(i * step)] for i in range(4)]
    return list(dict.fromkeys([*convs[:3], stream.layers[0]]))
