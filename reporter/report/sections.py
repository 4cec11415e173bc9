"""Report sections computed after the streamed pass: galleries, class averages, features.

Each function returns ``(data, figures)``: ``data`` goes into ``audit.json`` (numbers, names,
indices), ``figures`` are PNG data URIs used only by the HTML/PDF templates.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from reporter.config import AuditConfig
from reporter.report.figures import overlay, tile_uri, to_uint8_image
from reporter.setup import Prepared

__all__ = ["class_average_section", "featvis_section", "gallery_section"]

log = logging.getLogger(__name__)

KIND_TITLES = {
    "most_confident": "Most confident correct",
    "least_confident": "Least confident correct",
    "misclassified": "Misclassified",
}


def source_of(prep: Prepared, index: int) -> str:
    """How the report names a test image: its path relative to the data folder, or ``name#i``."""
    test = prep.bundle.test
    rel = getattr(test, "relative", None)
    return rel(index) if rel else test.describe(index)


def gallery_section(prep: Prepared, config: AuditConfig, stats) -> tuple[dict, dict]:
    """Per-class galleries with the original image and one overlay per method."""
    from reporter.pipeline import explain_images, select_gallery

    preds = stats.predictions
    names = prep.bundle.class_names
    chosen = select_gallery(preds, config.samples_per_class)
    positions = sorted({p for groups in chosen.values() for ps in groups.values() for p in ps})
    if not positions or not stats.layers:
        return {"layer": None, "classes": {}}, {"classes": {}}
    layer = stats.layers[0]
    dataset_idx = [int(preds.indices[p]) for p in positions]
    units, maps, flags = explain_images(prep, config, dataset_idx, [layer])
    row_of = {p: i for i, p in enumerate(positions)}
    data: dict[str, Any] = {"layer": layer, "classes": {}}
    figs: dict[str, Any] = {"classes": {}}
    for c, groups in chosen.items():
        cname = names[c]
        data["classes"][cname] = {}
        figs["classes"][cname] = {}
        for kind, pos_list in groups.items():
            items, tiles = [], []
            for p in pos_list:
                r = row_of[p]
                prob = preds.probs[p]
                pred = int(preds.preds[p])
                item = {
                    "index": int(preds.indices[p]),
                    "source": source_of(prep, int(preds.indices[p])),
                    "true": names[c],
                    "predicted": names[pred],
                    "p_predicted": float(np.nan_to_num(prob[pred])),
                    "p_true": float(np.nan_to_num(prob[c])),
                    "flagged_methods": [m for m in config.methods if bool(flags[m][layer][r])],
                }
                items.append(item)
                tile = {"original": tile_uri(to_uint8_image(units[r])), "overlays": {}}
                for m in config.methods:
                    if m in item["flagged_methods"]:
                        tile["overlays"][m] = None
                    else:
                        tile["overlays"][m] = tile_uri(
                            overlay(units[r], maps[m][layer][r], config.colormap)
                        )
                tiles.append(tile)
            data["classes"][cname][kind] = items
            figs["classes"][cname][kind] = tiles
    return data, figs


def class_average_section(prep: Prepared, config: AuditConfig, stats) -> tuple[dict, dict]:
    """Class-mean saliency per method and layer, with border vs centre fractions per class."""
    names = prep.bundle.class_names
    data: dict[str, Any] = {"layers": stats.layers, "classes": {}}
    figs: dict[str, Any] = {}
    counts = stats.class_count
    labels = stats.predictions.labels
    for c, cname in enumerate(names):
        entry: dict[str, Any] = {"correct_images": int(counts[c]) if counts is not None else 0}
        border = {}
        for m in config.methods:
            for layer in stats.layers:
                values = stats.border[m][layer][labels == c]
                border[f"{m}@{layer}"] = float(np.mean(values)) if len(values) else None
        entry["border_fraction"] = border
        data["classes"][cname] = entry
    if stats.image_sum is None or counts is None:
        return data, figs
    mean_images = stats.image_sum / stats.image_count.clamp_min(1)[:, None, None, None]
    for m in config.methods:
        figs[m] = {}
        for layer in stats.layers:
            figs[m][layer] = {}
            sums = stats.class_sum[m][layer]
            for c, cname in enumerate(names):
                if counts[c] == 0:
                    figs[m][layer][cname] = None
                    continue
                mean_map = sums[c] / counts[c]
                lo, hi = float(mean_map.min()), float(mean_map.max())
                norm = (mean_map - lo) / (hi - lo) if hi > lo else torch.zeros_like(mean_map)
                figs[m][layer][cname] = tile_uri(
                    overlay(mean_images[c], norm, config.colormap), min_side=96
                )
    return data, figs


def featvis_section(prep: Prepared, config: AuditConfig, stats) -> tuple[dict, dict]:
    """Filters, activation maximization, top-activating examples and class-relevant channels."""
    from reporter.featvis import activation_maps, filter_grid, receptive_field, render
    from reporter.featvis.grids import colorize, crop, image_grid
    from reporter.pipeline import first_conv

    model = prep.loaded.model
    meta = prep.loaded.meta
    names = prep.bundle.class_names
    data: dict[str, Any] = {"layers": {}, "filters": None, "activation_maps": None}
    figs: dict[str, Any] = {"layers": {}, "filters": None, "activation_maps": None}
    if config.featvis_channels == 0 or not stats.featvis_layers:
        return data, figs
    conv = first_conv(model)
    if conv is not None:
        weight = model.get_submodule(conv).weight.detach().cpu()
        grid = filter_grid(weight)
        data["filters"] = {
            "layer": conv,
            "count": int(weight.shape[0]),
            "shape": list(weight.shape[1:]),
        }
        figs["filters"] = tile_uri(to_uint8_image(grid), min_side=160)
    for layer in stats.featvis_layers:
        relevance = stats.relevance.get(layer)
        topk = stats.topk.get(layer)
        if topk is None or topk.channels is None:
            continue
        n_channels = len(topk.channels)
        # channels: each class's most relevant first, then the next ones, up to the budget
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
            budget = max(config.featvis_channels, min(len(tops), 16))
            order = order[:budget]
        if len(order) < config.featvis_channels:
            scores = topk.values[:, 0] if topk.values.numel() else torch.zeros(n_channels)
            for i in torch.argsort(scores, descending=True).tolist():
                ch = topk.channels[i]
                if ch not in order:
                    order.append(ch)
                if len(order) >= config.featvis_channels:
                    break
        rendered = render(
            model,
            layer,
            channels=order,
            size=meta.input_size,
            steps=config.featvis_steps,
            seed=config.seed,
            mean=meta.mean,
            std=meta.std,
            image_channels=meta.channels,
        )
        rf = receptive_field(
            model, layer, meta.input_size, image_channels=meta.channels, seed=config.seed
        )
        channel_data, channel_figs = {}, {}
        for i, ch in enumerate(order):
            examples = topk.examples(ch)
            crops, ex_data = [], []
            for ex in examples:
                box = rf.box(ex.y, ex.x)
                try:
                    unit = prep.bundle.test.load_unit(ex.index)
                except Exception:  # noqa: BLE001 - unreadable now: leave the crop out
                    continue
                crops.append(tile_uri(to_uint8_image(crop(unit, box)), min_side=64))
                ex_data.append(
                    {
                        "index": ex.index,
                        "source": source_of(prep, ex.index),
                        "activation": ex.value,
                        "box": list(box),
                    }
                )
            channel_data[str(ch)] = {
                "objective_start": float(rendered.initial[i]),
                "objective_end": float(rendered.final[i]),
                "top_examples": ex_data,
            }
            channel_figs[str(ch)] = {
                "render": tile_uri(to_uint8_image(rendered.images[i]), min_side=96),
                "examples": crops,
            }
        data["layers"][layer] = {
            "channels_total": n_channels,
            "rendered": order,
            "steps": config.featvis_steps,
            "receptive_field": rf.to_dict(),
            "class_channels": per_class,
            "channels": channel_data,
        }
        figs["layers"][layer] = {"channels": channel_figs}
    # intermediate activation maps of the most confidently correct image
    preds = stats.predictions
    correct = np.flatnonzero(preds.preds == preds.labels)
    if len(correct) and stats.layers:
        best = int(correct[np.argmax(preds.confidence[correct])])
        index = int(preds.indices[best])
        x, _, _, _ = prep.bundle.test[index]
        if x is not None:
            chosen = _activation_layers(model, stats)
            maps = activation_maps(model, x.to(next(model.parameters()).device), chosen)
            panel = {}
            for name, fmap in maps.items():
                if fmap.dim() != 3:
                    continue
                # colorize scales each map to [0, 1] on its own
                grid = image_grid(colorize(fmap[:8], config.colormap), nrow=8)
                panel[name] = tile_uri(to_uint8_image(grid), min_side=48)
            data["activation_maps"] = {
                "index": index,
                "source": source_of(prep, index),
                "class": names[int(preds.labels[best])],
                "layers": list(panel),
            }
            figs["activation_maps"] = {
                "image": tile_uri(to_uint8_image(prep.bundle.test.load_unit(index))),
                "layers": panel,
            }
    return data, figs


def _activation_layers(model: torch.nn.Module, stats) -> list[str]:
    """Up to four conv layers spread over the depth, ending with the CAM layer."""
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) > 4:
        step = (len(convs) - 1) / 3
        convs = [convs[round(i * step)] for i in range(4)]
    out = list(dict.fromkeys([*convs[:3], stats.layers[0]]))
    return out
