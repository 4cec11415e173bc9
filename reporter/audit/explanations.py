"""The explanation stages after the stream pass: galleries, class averages, border summary.

Galleries recompute maps for the few images they show (at the input size, first layer); class
averages turn the stream pass's running sums into one normalised map per class. Both hand their
pictures to the report as arrays (uint8 images, uint8 maps in [0, 255]).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reporter.audit.results import SectionResult, uint8_images, uint8_maps
from reporter.audit.stream import BORDER_BAND, StreamResult
from reporter.config import AuditConfig
from reporter.errors import ReporterError
from reporter.explain import explain_batches, normalize_maps
from reporter.explain.registry import get_method
from reporter.metrics.trust.shortcut import border_share
from reporter.nn.device import model_device
from reporter.predict import Predictions
from reporter.setup import Prepared

__all__ = [
    "border_summary",
    "class_averages",
    "explain_images",
    "galleries",
    "method_table",
    "select_gallery",
    "source_of",
]

KINDS = ("most_confident", "least_confident", "misclassified")


def source_of(prep: Prepared, index: int) -> str:
    """How the report names a test image: its path relative to the data folder, or ``name#i``."""
    test = prep.bundle.test
    rel = getattr(test, "relative", None)
    return str(rel(index)) if rel else str(test.describe(index))


def method_table(methods: list[str]) -> list[dict[str, Any]]:
    """The report's method table, from the method registry."""
    out = []
    for name in methods:
        spec = get_method(name)
        out.append(
            {
                "name": name,
                "title": spec.title,
                "shows": spec.shows,
                "cost": spec.cost,
                "reference": spec.reference,
            }
        )
    return out


def select_gallery(preds: Predictions, n: int) -> dict[int, dict[str, list[int]]]:
    """Per class: positions (into ``preds``) of the most and least confident correct
    predictions and of the misclassified images (most confidently wrong first). Images whose
    output is not finite are never shown."""
    out: dict[int, dict[str, list[int]]] = {}
    conf = preds.confidence
    pred = preds.preds
    finite = preds.finite
    for c in np.unique(preds.labels):
        mine = np.flatnonzero((preds.labels == c) & finite)
        right = mine[pred[mine] == c]
        wrong = mine[pred[mine] != c]
        right = right[np.argsort(-conf[right], kind="stable")]
        wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
        most = right[:n].tolist()
        least = [i for i in right[::-1][:n].tolist() if i not in most][::-1]
        out[int(c)] = {
            "most_confident": most,
            "least_confident": least,
            "misclassified": wrong[:n].tolist(),
        }
    return out


def explain_images(
    prep: Prepared,
    methods: list[str],
    dataset_indices: list[int],
    layers: list[str],
    *,
    batch_size: int,
    targets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, dict[str, torch.Tensor]], dict]:
    """Maps (upsampled to the input size, normalised) for a few test images.

    Returns:
        ``(images [N, C, H, W] as the model sees them, unit images in [0, 1],
        maps[method][layer] [N, H, W], flags[method][layer] [N])``.
    """
    images, units = load_images(prep, dataset_indices)
    model = prep.loaded.model
    maps, flags = explain_batches(
        model,
        images,
        layers=layers,
        methods=methods,
        targets=targets,
        batch_size=batch_size,
        device=model_device(model),
    )
    return images, units, maps, flags


def load_images(prep: Prepared, dataset_indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [N, C, H, W] as the model sees them, the same in [0, 1] for display)``."""
    test = prep.bundle.test
    xs = []
    for i in dataset_indices:
        x, _, _, err = test[i]
        if x is None:  # pragma: no cover - it was readable during the pass
            raise ReporterError(f"{test.describe(i)} became unreadable during the run: {err}")
        xs.append(x)
    images = torch.stack(xs)
    return images, prep.preprocess.denormalize(images)


def galleries(prep: Prepared, config: AuditConfig, stream: StreamResult) -> SectionResult:
    """Per-class galleries: the image and one map per method on the first layer.

    Arrays: ``images`` ``[N, H, W, 3]`` uint8, ``maps`` ``[M, N, H, W]`` uint8 and ``flags``
    ``[M, N]`` (all-zero or NaN maps, drawn as a note instead of a blank tile). Each item of
    the section names its ``row`` in these arrays.
    Misclassified images also get the map of their *true* class (the Grad-CAM paper's failure
    analysis): ``true_maps`` ``[M, W, H, W]`` uint8 for the W misclassified images, each such
    item naming its ``true_row``.
    """
    preds = stream.predictions
    names = prep.bundle.class_names
    methods = list(config.methods)
    result = SectionResult("galleries", {"layer": None, "classes": {}})
    chosen = select_gallery(preds, config.samples_per_class)
    positions = sorted({p for groups in chosen.values() for ps in groups.values() for p in ps})
    if not positions or not stream.layers:
        return result
    layer = stream.layers[0]
    _, units, maps, flags = explain_images(
        prep,
        methods,
        [int(preds.indices[p]) for p in positions],
        [layer],
        batch_size=config.batch_size,
    )
    row_of = {p: i for i, p in enumerate(positions)}
    # misclassified images: the map of the true class too, beside the predicted one's
    wrong = sorted({p for groups in chosen.values() for p in groups.get("misclassified", [])})
    true_row = {p: i for i, p in enumerate(wrong)}
    true_maps = None
    if wrong:
        _, _, tmaps, _ = explain_images(
            prep,
            methods,
            [int(preds.indices[p]) for p in wrong],
            [layer],
            batch_size=config.batch_size,
            targets=torch.as_tensor(preds.labels[wrong], dtype=torch.long),
        )
        true_maps = torch.stack([tmaps[m][layer] for m in methods])
    classes: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for c, groups in chosen.items():
        classes[names[c]] = {}
        for kind, pos_list in groups.items():
            items = []
            for p in pos_list:
                r = row_of[p]
                prob = preds.probs[p]
                pred = int(preds.preds[p])
                items.append(
                    {
                        "row": r,
                        "index": int(preds.indices[p]),
                        "source": source_of(prep, int(preds.indices[p])),
                        "true": names[c],
                        "predicted": names[pred],
                        "p_predicted": float(np.nan_to_num(prob[pred])),
                        "p_true": float(np.nan_to_num(prob[c])),
                        "flagged_methods": [m for m in methods if bool(flags[m][layer][r])],
                    }
                )
                if p in true_row:
                    items[-1]["true_row"] = true_row[p]
            classes[names[c]][kind] = items
    result.section = {"layer": layer, "methods": methods, "classes": classes}
    result.arrays = {
        "images": uint8_images(units),
        "maps": uint8_maps(torch.stack([maps[m][layer] for m in methods])),
        "flags": torch.stack([flags[m][layer] for m in methods]).numpy().astype(bool),
    }
    if true_maps is not None:
        result.arrays["true_maps"] = uint8_maps(true_maps)
    return result


def class_averages(names: list[str], stream: StreamResult) -> SectionResult:
    """Class-mean saliency per method and layer, and per class the share of saliency in the
    border band.

    Arrays: ``images`` ``[K, S, S', 3]`` uint8 (mean image of each class), ``maps``
    ``[M, L, K, S, S']`` uint8 (class-mean map, normalised per class; zero where a class has
    no correctly classified image) and ``counts`` ``[K]``.
    """
    labels = stream.predictions.labels
    counts = stream.class_count
    section: dict[str, Any] = {"layers": stream.layers, "methods": stream.methods, "classes": {}}
    for c, cname in enumerate(names):
        border = {}
        for m in stream.methods:
            for layer in stream.layers:
                values = stream.border[m][layer][labels == c]
                border[f"{m}@{layer}"] = float(np.mean(values)) if len(values) else None
        section["classes"][cname] = {
            "correct_images": int(counts[c]) if counts is not None else 0,
            "border_fraction": border,
        }
    result = SectionResult("class_average", section)
    if stream.image_sum is None or stream.image_count is None or counts is None:
        return result
    mean_images = stream.image_sum / stream.image_count.clamp_min(1)[:, None, None, None]
    means = torch.stack(
        [
            torch.stack(
                [
                    stream.class_sum[m][layer] / counts.clamp_min(1)[:, None, None]
                    for layer in stream.layers
                ]
            )
            for m in stream.methods
        ]
    )  # [M, L, K, S, S']
    result.arrays = {
        "images": uint8_images(mean_images),
        "maps": uint8_maps(normalize_maps(means)),
        "counts": counts.numpy().astype(np.int64),
    }
    return result


def border_summary(config: AuditConfig, names: list[str], stream: StreamResult) -> dict | None:
    """Mean share of the first method's saliency in the border band, and the class that leans
    on the border most."""
    if not stream.layers:
        return None
    method, layer = config.methods[0], stream.layers[0]
    values = stream.border[method][layer]
    if not len(values):
        return None
    labels = stream.predictions.labels
    per_class = {names[c]: float(values[labels == c].mean()) for c in np.unique(labels)}
    worst = max(per_class, key=lambda n: per_class[n]) if per_class else None
    side = stream.class_sum[method][layer].shape[-2:]
    return {
        "method": method,
        "layer": layer,
        "band": BORDER_BAND,
        "area": border_share(int(side[0]), int(side[1]), BORDER_BAND),
        "mean": float(values.mean()),
        "class": worst,
        "class_value": per_class.get(worst) if worst else None,
    }
