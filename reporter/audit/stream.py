"""The stream pass: one pass over the audited images that keeps only small running statistics.

Per batch: predictions, CAMs for every method and layer, running class-mean maps, the share of
saliency in the border band, top-k activations and class-relevant channels, and one small
per-image record (prediction, confidence, a content hash and a 16 x 16 float16 map per method at
the first layer, so that a later ``reporter compare`` can measure explanation drift). Nothing
per image is kept at full resolution.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from reporter.config import AuditConfig
from reporter.data.datasets import make_loader
from reporter.device import model_device
from reporter.explain import CamEngine
from reporter.featvis import ClassChannelRelevance, TopKActivations
from reporter.metrics.trust.shortcut import border_fraction
from reporter.predict import Predictions, collect_predictions, predict, record_skipped
from reporter.progress import progress_bar
from reporter.setup import Prepared

__all__ = [
    "BORDER_BAND",
    "RECORD_SIDE",
    "STATS_SIDE",
    "StreamResult",
    "audit_indices",
    "stream_pass",
]

STATS_SIDE = 64
"""Longest side of the running class-mean maps and images."""
RECORD_SIDE = 16
"""Side of the per-image low-resolution maps kept in ``artifacts/records.npz``."""
BORDER_BAND = 0.15
"""Border band width (fraction of each side) of the per-image saliency statistics."""


@dataclass
class StreamResult:
    """Everything the stream pass keeps (small; independent of image resolution).

    Attributes:
        predictions: Per-image probabilities, labels and dataset indices.
        layers: Resolved CAM layer names (empty for a model that cannot be hooked).
        methods: CAM methods computed.
        featvis_layers: Resolved layers whose channels are tracked.
        border: ``border[method][layer]``: per-image fraction of saliency in the border band.
        flagged: ``flagged[method][layer]``: count of all-zero or NaN maps.
        class_sum: ``class_sum[method][layer]``: ``[K, S, S']`` sum of normalised maps over the
            correctly classified images of each class.
        class_count: ``[K]`` correctly classified images per class.
        image_sum: ``[K, C, S, S']`` sum of the display images of each class.
        image_count: ``[K]`` images per class.
        topk: Per featvis layer, a :class:`~reporter.featvis.TopKActivations`.
        relevance: Per featvis layer, a :class:`~reporter.featvis.ClassChannelRelevance`.
        record_maps: ``[N, M, 16, 16]`` float16 maps of every method at the first layer.
        hashes: ``[N]`` uint64 content hash of each image (as the model saw it, quantised).
        seconds_per_image: Time of the pass per image.
    """

    predictions: Predictions
    layers: list[str]
    methods: list[str] = field(default_factory=list)
    featvis_layers: list[str] = field(default_factory=list)
    border: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    flagged: dict[str, dict[str, int]] = field(default_factory=dict)
    class_sum: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    class_count: torch.Tensor | None = None
    image_sum: torch.Tensor | None = None
    image_count: torch.Tensor | None = None
    topk: dict[str, TopKActivations] = field(default_factory=dict)
    relevance: dict[str, ClassChannelRelevance] = field(default_factory=dict)
    record_maps: np.ndarray | None = None
    hashes: np.ndarray | None = None
    seconds_per_image: float = 0.0

    def records(self) -> dict[str, np.ndarray]:
        """The per-image records as arrays (``artifacts/records.npz``)."""
        preds = self.predictions
        out = {
            "index": preds.indices.astype(np.int64),
            "label": preds.labels.astype(np.int64),
            "pred": preds.preds.astype(np.int64),
            "confidence": preds.confidence.astype(np.float32),
            "finite": np.isfinite(preds.probs).all(axis=1),
        }
        if self.hashes is not None:
            out["hash"] = self.hashes
        if self.record_maps is not None:
            out["maps"] = self.record_maps
        return out


def stats_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """Size of the running statistics: the input size scaled to at most :data:`STATS_SIDE`."""
    h, w = input_size
    scale = min(1.0, STATS_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def audit_indices(n: int, labels: np.ndarray, max_images: int | None, seed: int) -> np.ndarray:
    """The test images to audit: all ``n``, or a seeded subset of ``max_images`` that takes
    the classes in turn, so that small subsets still cover every class."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(labels[i]), []).append(int(i))
    picked: list[int] = []
    while len(picked) < max_images:
        for c in sorted(by_class):
            if by_class[c] and len(picked) < max_images:
                picked.append(by_class[c].pop())
    return np.sort(np.array(picked, dtype=np.int64))


def content_hashes(unit: torch.Tensor) -> np.ndarray:
    """A 64-bit hash per image ``[N, C, H, W]`` in [0, 1] of its uint8-quantised pixels."""
    q = (unit.detach().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(img.tobytes(), digest_size=8).digest(), "little")
            for img in q
        ],
        dtype=np.uint64,
    )


def stream_pass(
    prep: Prepared, config: AuditConfig, indices: np.ndarray, *, progress: bool
) -> StreamResult:
    """One pass over the test images ``indices``: predictions, CAMs, running statistics.

    For a model that cannot be hooked (TorchScript) only predictions are computed.
    """
    model = prep.loaded.model
    test = prep.bundle.test
    k = len(prep.bundle.class_names)
    meta = prep.loaded.meta
    device = model_device(model)
    size = stats_size(meta.input_size)
    start = time.perf_counter()
    if not prep.loaded.hookable:
        preds = predict(
            model,
            test,
            batch_size=config.batch_size,
            device=device,
            progress=progress,
            indices=indices.tolist(),
        )
        return StreamResult(preds, [], seconds_per_image=_per_image(start, preds))

    loader = make_loader(test, batch_size=config.batch_size, indices=indices.tolist())
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    records: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    image_sum = torch.zeros(k, meta.channels, *size)
    image_count = torch.zeros(k)
    methods = list(config.methods)
    featvis_requests = [n for n in config.featvis_layers if n != "auto"]
    want_featvis = config.featvis_channels > 0 and bool(config.featvis_layers)
    with CamEngine(
        model,
        layers=list(config.layers),
        methods=methods,
        device=device,
        record=featvis_requests if want_featvis else [],
        input_shape=(meta.channels, *meta.input_size),
    ) as engine:
        layers = list(engine.layers)
        fv_layers: list[str] = []
        if want_featvis:
            for name in config.featvis_layers:
                resolved = layers[0] if name == "auto" else engine.layer_map.get(name, name)
                if resolved not in fv_layers:
                    fv_layers.append(resolved)
        border: dict[str, dict[str, list[np.ndarray]]] = {
            m: {layer: [] for layer in layers} for m in methods
        }
        flagged = {m: dict.fromkeys(layers, 0) for m in methods}
        class_sum = {m: {layer: torch.zeros(k, *size) for layer in layers} for m in methods}
        class_count = torch.zeros(k)
        topk = {name: TopKActivations(name, k=config.top_k) for name in fv_layers}
        relevance: dict[str, ClassChannelRelevance] = {}
        for batch in progress_bar(loader, desc="explain", enabled=progress, unit="batch"):
            record_skipped(test, batch.skipped, skipped)
            if len(batch) == 0:
                continue
            result = engine(batch.images.to(device))
            logits = result.logits.float()
            y = batch.labels
            probs.append(torch.softmax(logits, 1).numpy())
            labels.append(y.numpy())
            idx.append(batch.indices.numpy())
            correct = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
            for m in methods:
                for layer in layers:
                    up = result.upsampled(m, layer, size)  # normalised; NaN maps become 0
                    border[m][layer].append(border_fraction(up, border=BORDER_BAND).numpy())
                    flagged[m][layer] += int(result.flags[m][layer].sum())
                    class_sum[m][layer].index_add_(0, y[correct], up[correct])
            records.append(
                torch.stack(
                    [result.upsampled(m, layers[0], (RECORD_SIDE, RECORD_SIDE)) for m in methods],
                    dim=1,
                )
                .to(torch.float16)
                .numpy()
            )
            class_count.index_add_(0, y[correct], torch.ones(int(correct.sum())))
            unit = prep.preprocess.denormalize(batch.images)
            hashes.append(content_hashes(unit))
            small = F.interpolate(
                unit, size=size, mode="bilinear", align_corners=False, antialias=True
            )
            image_sum.index_add_(0, y, small)
            image_count.index_add_(0, y, torch.ones(len(y)))
            acts, grads = result.activations, result.gradients
            for name in fv_layers:
                a = acts.get(name)
                if a is None or a.dim() != 4:
                    continue
                topk[name].update(a, batch.indices)
                # gradients are of the predicted class: on correct images, of the true class
                if name in grads and correct.any():
                    if name not in relevance:
                        relevance[name] = ClassChannelRelevance(k, a.shape[1])
                    relevance[name].update(a[correct], grads[name][correct], y[correct])
    preds = collect_predictions(probs, labels, idx, skipped, k)
    return StreamResult(
        predictions=preds,
        layers=layers,
        methods=methods,
        featvis_layers=fv_layers,
        border={
            m: {layer: np.concatenate(v) if v else np.zeros(0) for layer, v in d.items()}
            for m, d in border.items()
        },
        flagged=flagged,
        class_sum=class_sum,
        class_count=class_count,
        image_sum=image_sum,
        image_count=image_count,
        topk=topk,
        relevance=relevance,
        record_maps=(
            np.concatenate(records)
            if records
            else np.zeros((0, len(methods), RECORD_SIDE, RECORD_SIDE), np.float16)
        ),
        hashes=np.concatenate(hashes) if hashes else np.zeros(0, np.uint64),
        seconds_per_image=_per_image(start, preds),
    )


def _per_image(start: float, preds: Predictions) -> float:
    return (time.perf_counter() - start) / max(1, len(preds.labels))
