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
from reporter.explain import CamEngine, CamResult
from reporter.featvis import ClassChannelRelevance, TopKActivations
from reporter.metrics.trust.shortcut import border_fraction
from reporter.nn.device import model_device
from reporter.predict import Predictions, collect_predictions, predict, record_skipped
from reporter.progress import progress_bar
from reporter.setup import Prepared

__all__ = [
    "BORDER_BAND",
    "RECORD_SIDE",
    "STATS_SIDE",
    "StreamAccumulator",
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


class StreamAccumulator:
    """The running statistics of the stream pass: fed one batch at a time, finished once.

    Everything it holds is a sum, a count, a top-k or a small per-image record, so two
    accumulators over disjoint images can be merged.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        channels: int,
        size: tuple[int, int],
        methods: list[str],
        layers: list[str],
        featvis_layers: list[str],
        top_k: int,
    ) -> None:
        k = num_classes
        self.size, self.methods, self.layers = size, methods, layers
        self.featvis_layers = featvis_layers
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []
        self.hashes: list[np.ndarray] = []
        self.records: list[np.ndarray] = []
        self.skipped: list[dict[str, str]] = []
        self.border: dict[str, dict[str, list[np.ndarray]]] = {
            m: {layer: [] for layer in layers} for m in methods
        }
        self.flagged = {m: dict.fromkeys(layers, 0) for m in methods}
        self.class_sum = {m: {layer: torch.zeros(k, *size) for layer in layers} for m in methods}
        self.class_count = torch.zeros(k)
        self.image_sum = torch.zeros(k, channels, *size)
        self.image_count = torch.zeros(k)
        self.topk = {name: TopKActivations(name, k=top_k) for name in featvis_layers}
        self.relevance: dict[str, ClassChannelRelevance] = {}
        self.num_classes = k

    def update(
        self, result: CamResult, labels: torch.Tensor, indices: torch.Tensor, unit: torch.Tensor
    ) -> None:
        """Add one batch: the engine's ``result``, true ``labels``, dataset ``indices`` and the
        images in [0, 1] (``unit``)."""
        logits = result.logits.float()
        y = labels
        self.probs.append(torch.softmax(logits, 1).numpy())
        self.labels.append(y.numpy())
        self.indices.append(indices.numpy())
        correct = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
        for m in self.methods:
            for layer in self.layers:
                up = result.upsampled(m, layer, self.size)  # normalised; NaN maps become 0
                self.border[m][layer].append(border_fraction(up, border=BORDER_BAND).numpy())
                self.flagged[m][layer] += int(result.flags[m][layer].sum())
                self.class_sum[m][layer].index_add_(0, y[correct], up[correct])
        first = self.layers[0]
        side = (RECORD_SIDE, RECORD_SIDE)
        maps = [result.upsampled(m, first, side) for m in self.methods]
        self.records.append(torch.stack(maps, dim=1).to(torch.float16).numpy())
        self.class_count.index_add_(0, y[correct], torch.ones(int(correct.sum())))
        self.hashes.append(content_hashes(unit))
        small = F.interpolate(
            unit, size=self.size, mode="bilinear", align_corners=False, antialias=True
        )
        self.image_sum.index_add_(0, y, small)
        self.image_count.index_add_(0, y, torch.ones(len(y)))
        acts, grads = result.activations, result.gradients
        for name in self.featvis_layers:
            a = acts.get(name)
            if a is None or a.dim() != 4:
                continue
            self.topk[name].update(a, indices)
            # gradients are of the predicted class: on correct images, of the true class
            if name in grads and correct.any():
                if name not in self.relevance:
                    self.relevance[name] = ClassChannelRelevance(self.num_classes, a.shape[1])
                self.relevance[name].update(a[correct], grads[name][correct], y[correct])

    def finish(self, seconds: float) -> StreamResult:
        """The :class:`StreamResult` of everything added."""
        preds = collect_predictions(
            self.probs, self.labels, self.indices, self.skipped, self.num_classes
        )
        empty = np.zeros((0, len(self.methods), RECORD_SIDE, RECORD_SIDE), np.float16)
        return StreamResult(
            predictions=preds,
            layers=self.layers,
            methods=self.methods,
            featvis_layers=self.featvis_layers,
            border={
                m: {layer: np.concatenate(v) if v else np.zeros(0) for layer, v in d.items()}
                for m, d in self.border.items()
            },
            flagged=self.flagged,
            class_sum=self.class_sum,
            class_count=self.class_count,
            image_sum=self.image_sum,
            image_count=self.image_count,
            topk=self.topk,
            relevance=self.relevance,
            record_maps=np.concatenate(self.records) if self.records else empty,
            hashes=np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64),
            seconds_per_image=seconds / max(1, len(preds.labels)),
        )


def _featvis_layers(config: AuditConfig, engine: CamEngine) -> list[str]:
    """The layers whose channels the pass tracks (``auto``: the first CAM layer)."""
    if not (config.featvis_channels > 0 and config.featvis_layers):
        return []
    out: list[str] = []
    for name in config.featvis_layers:
        resolved = engine.layers[0] if name == "auto" else engine.layer_map.get(name, name)
        if resolved not in out:
            out.append(resolved)
    return out


def stream_pass(
    prep: Prepared, config: AuditConfig, indices: np.ndarray, *, progress: bool
) -> StreamResult:
    """One pass over the test images ``indices``: predictions, CAMs, running statistics.

    For a model that cannot be hooked (TorchScript) only predictions are computed.
    """
    model = prep.loaded.model
    test = prep.bundle.test
    meta = prep.loaded.meta
    device = model_device(model)
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
    want_featvis = config.featvis_channels > 0 and bool(config.featvis_layers)
    with CamEngine(
        model,
        layers=list(config.layers),
        methods=list(config.methods),
        device=device,
        record=[n for n in config.featvis_layers if n != "auto"] if want_featvis else [],
        input_shape=(meta.channels, *meta.input_size),
    ) as engine:
        acc = StreamAccumulator(
            num_classes=len(prep.bundle.class_names),
            channels=meta.channels,
            size=stats_size(meta.input_size),
            methods=list(config.methods),
            layers=list(engine.layers),
            featvis_layers=_featvis_layers(config, engine),
            top_k=config.top_k,
        )
        for batch in progress_bar(loader, desc="explain", enabled=progress, unit="batch"):
            record_skipped(test, batch.skipped, acc.skipped)
            if len(batch) == 0:
                continue
            result = engine(batch.images.to(device))
            acc.update(
                result, batch.labels, batch.indices, prep.preprocess.denormalize(batch.images)
            )
    return acc.finish(time.perf_counter() - start)


def _per_image(start: float, preds: Predictions) -> float:
    return (time.perf_counter() - start) / max(1, len(preds.labels))
