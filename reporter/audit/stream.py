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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reporter.audit.precision import PrecisionGuard
from reporter.config import AuditConfig
from reporter.data.datasets import FileImageDataset, loader_workers, make_loader
from reporter.data.gpu_decode import GpuJpegDecoder, JpegFiles, collate_jpeg, gpu_decode_reason
from reporter.distributed import Session, merge_topk, shard
from reporter.explain import CamEngine, CamResult
from reporter.featvis import ClassChannelRelevance, TopKActivations
from reporter.metrics.trust.shortcut import border_fraction
from reporter.nn.device import model_device
from reporter.nn.hooks import eval_mode
from reporter.predict import Predictions, collect_predictions, record_skipped
from reporter.progress import progress_bar
from reporter.setup import Prepared

__all__ = [
    "BORDER_BAND",
    "RECORD_SIDE",
    "STATS_SIDE",
    "StreamAccumulator",
    "StreamResult",
    "audit_indices",
    "merge_stream",
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
        precision: What ``--precision`` asked for and what ran (see
            :class:`~reporter.audit.precision.PrecisionGuard`); ``None`` without maps.
        decode: Whether JPEGs were decoded on the GPU (:mod:`reporter.data.gpu_decode`), or
            why not; ``None`` without maps.
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
    precision: dict[str, Any] | None = None
    decode: dict[str, Any] | None = None

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
        self.skipped_index: list[int] = []
        self.border: dict[str, dict[str, list[np.ndarray]]] = {
            m: {layer: [] for layer in layers} for m in methods
        }
        self.flagged = {m: dict.fromkeys(layers, 0) for m in methods}
        # sums in float64: exact enough that the order of additions (one process, or shares
        # merged from several) never shows in the float32 results
        self.class_sum = {
            m: {layer: torch.zeros(k, *size, dtype=torch.float64) for layer in layers}
            for m in methods
        }
        self.class_count = torch.zeros(k)
        self.image_sum = torch.zeros(k, channels, *size, dtype=torch.float64)
        self.image_count = torch.zeros(k)
        self.topk = {name: TopKActivations(name, k=top_k) for name in featvis_layers}
        self.relevance: dict[str, ClassChannelRelevance] = {}
        self.num_classes = k
        self.precision: dict[str, Any] | None = None
        self.decode: dict[str, Any] | None = None

    def skip(self, dataset: Any, skipped: list[tuple[int, str]]) -> None:
        """Record a batch's unreadable images (``(index, reason)`` pairs)."""
        record_skipped(dataset, skipped, self.skipped)
        self.skipped_index.extend(int(i) for i, _ in skipped)

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
                self.class_sum[m][layer].index_add_(0, y[correct], up[correct].double())
        first = self.layers[0]
        side = (RECORD_SIDE, RECORD_SIDE)
        maps = [result.upsampled(m, first, side) for m in self.methods]
        self.records.append(torch.stack(maps, dim=1).to(torch.float16).numpy())
        self.class_count.index_add_(0, y[correct], torch.ones(int(correct.sum())))
        self.hashes.append(content_hashes(unit))
        small = F.interpolate(
            unit, size=self.size, mode="bilinear", align_corners=False, antialias=True
        )
        self.image_sum.index_add_(0, y, small.double())
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
        if not self.layers:  # a model that cannot be hooked: predictions only
            return StreamResult(preds, [], seconds_per_image=seconds / max(1, len(preds.labels)))
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
            class_sum={m: {k: v.float() for k, v in d.items()} for m, d in self.class_sum.items()},
            class_count=self.class_count,
            image_sum=self.image_sum.float(),
            image_count=self.image_count,
            topk=self.topk,
            relevance=self.relevance,
            record_maps=np.concatenate(self.records) if self.records else empty,
            hashes=np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64),
            seconds_per_image=seconds / max(1, len(preds.labels)),
            precision=self.precision,
            decode=self.decode,
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
    prep: Prepared,
    config: AuditConfig,
    indices: np.ndarray,
    *,
    progress: bool,
    session: Session | None = None,
) -> StreamResult | None:
    """One pass over the test images ``indices``: predictions, CAMs, running statistics.

    For a model that cannot be hooked (TorchScript) only predictions are computed. With a
    ``session`` of several processes, each runs its :func:`~reporter.distributed.shard` of
    ``indices`` and the accumulators are merged on rank 0 (:func:`merge_stream`); rank 0 gets
    the result of all images, the other ranks ``None``.
    """
    session = session or Session()
    start = time.perf_counter()
    mine = shard(indices, session.rank, session.world_size, config.batch_size)
    with session.stage("running the stream pass"):
        first = indices[: config.batch_size]  # every process checks --precision on it
        acc = _accumulate(prep, config, mine, first, progress=progress and session.is_main)
    merged = merge_stream(acc, session) if session.distributed else acc
    if merged is None:
        return None
    return merged.finish(time.perf_counter() - start)


def _loader(prep: Prepared, config: AuditConfig, indices: np.ndarray, device: torch.device):
    test = prep.bundle.test
    return make_loader(
        test,
        batch_size=config.batch_size,
        indices=indices.tolist(),
        num_workers=loader_workers(config.workers, test),
        pin_memory=device.type == "cuda",
    )


class _Decode:
    """The batches of the pass: CPU-decoded as usual, or JPEGs decoded on the GPU
    (:mod:`reporter.data.gpu_decode`, checked on the audit's first batch)."""

    def __init__(self, prep: Prepared, config: AuditConfig, device: torch.device) -> None:
        self.prep, self.config, self.device = prep, config, device
        test = prep.bundle.test
        self.reason = gpu_decode_reason(test, device)
        self.decoder: GpuJpegDecoder | None = None
        if self.reason is None and isinstance(test, FileImageDataset):
            self.decoder = GpuJpegDecoder(test, prep.preprocess, device)

    def batches(self, indices: np.ndarray, first: np.ndarray):
        """The batches of ``indices`` (the decode checked on ``first``)."""
        if self.decoder is None:
            yield from _loader(self.prep, self.config, indices, self.device)
            return
        # on CUDA (tests run this with torchvision's CPU decoder in place of nvJPEG)
        files = JpegFiles(self.decoder.dataset)
        size = self.config.batch_size
        check = make_loader(files, batch_size=size, indices=first.tolist(), collate_fn=collate_jpeg)
        raw_first = next((raw for raw in check if len(raw)), None)
        if raw_first is not None:
            self.decoder.calibrate(raw_first)
        loader = make_loader(
            files,
            batch_size=size,
            indices=indices.tolist(),
            num_workers=loader_workers(self.config.workers, self.decoder.dataset),
            collate_fn=collate_jpeg,
        )
        for raw in loader:
            yield self.decoder(raw)

    def summary(self) -> dict[str, Any]:
        """For ``audit.json`` (``environment.jpeg_decode``)."""
        if self.decoder is None:
            return {"jpeg_on_gpu": False, "reason": self.reason}
        return {**self.decoder.summary(), "reason": None}


def _accumulate(
    prep: Prepared, config: AuditConfig, indices: np.ndarray, first: np.ndarray, *, progress: bool
) -> StreamAccumulator:
    """The accumulator of the images ``indices`` (in order) on this process; ``first`` is the
    audit's first batch, on which ``--precision`` is checked."""
    model = prep.loaded.model
    test = prep.bundle.test
    meta = prep.loaded.meta
    device = model_device(model)
    k = len(prep.bundle.class_names)
    if not prep.loaded.hookable:
        loader = _loader(prep, config, indices, device)
        acc = StreamAccumulator(
            num_classes=k,
            channels=meta.channels,
            size=stats_size(meta.input_size),
            methods=[],
            layers=[],
            featvis_layers=[],
            top_k=max(1, config.top_k),
        )
        with eval_mode(model), torch.inference_mode():
            for batch in progress_bar(loader, desc="predict", enabled=progress, unit="batch"):
                acc.skip(test, batch.skipped)
                if len(batch) == 0:
                    continue
                logits = model(batch.images.to(device, non_blocking=True))
                acc.probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
                acc.labels.append(batch.labels.numpy())
                acc.indices.append(batch.indices.numpy())
        return acc

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
            num_classes=k,
            channels=meta.channels,
            size=stats_size(meta.input_size),
            methods=list(config.methods),
            layers=list(engine.layers),
            featvis_layers=_featvis_layers(config, engine),
            top_k=config.top_k,
        )
        decode = _Decode(prep, config, device)
        guard = PrecisionGuard(config.precision, device)
        if guard.used != "fp32":
            for batch in make_loader(test, batch_size=config.batch_size, indices=first.tolist()):
                if len(batch):
                    guard.calibrate(engine, batch.images.to(device))
        batches = decode.batches(indices, first)
        for batch in progress_bar(batches, desc="explain", enabled=progress, unit="batch"):
            acc.skip(test, batch.skipped)
            if len(batch) == 0:
                continue
            result = guard(engine, batch.images.to(device, non_blocking=True))
            acc.update(
                result,
                batch.labels,
                batch.indices,
                prep.preprocess.denormalize(batch.images).cpu(),
            )
        acc.precision = guard.summary()
        acc.decode = decode.summary()
    return acc


# ------------------------------------------------------------------ merging across processes


def _row_dtype(acc: StreamAccumulator) -> np.dtype:
    """One image's record as a fixed-size structured row (gathered as bytes)."""
    fields: list[tuple[Any, ...]] = [
        ("index", "<i8"),
        ("label", "<i8"),
        ("probs", "<f4", (acc.num_classes,)),
    ]
    if acc.layers:
        m, n_l = len(acc.methods), len(acc.layers)
        fields += [
            ("hash", "<u8"),
            ("maps", "<f2", (m, RECORD_SIDE, RECORD_SIDE)),
            ("border", "<f4", (m * n_l,)),
        ]
    return np.dtype(fields)


def _rows(acc: StreamAccumulator) -> np.ndarray:
    dtype = _row_dtype(acc)
    n = sum(len(x) for x in acc.labels)
    rows = np.zeros(n, dtype=dtype)
    if n:
        rows["index"] = np.concatenate(acc.indices)
        rows["label"] = np.concatenate(acc.labels)
        rows["probs"] = np.concatenate(acc.probs)
        if acc.layers:
            rows["hash"] = np.concatenate(acc.hashes)
            rows["maps"] = np.concatenate(acc.records)
            rows["border"] = np.stack(
                [np.concatenate(acc.border[m][layer]) for m in acc.methods for layer in acc.layers],
                axis=1,
            )
    return rows.view(np.uint8).reshape(n, dtype.itemsize)


def _sum_tensors(acc: StreamAccumulator, relevance: dict[str, int]) -> list[torch.Tensor]:
    """The accumulator's sums in a fixed order (the same on every process)."""
    out: list[torch.Tensor] = [acc.class_count, acc.image_sum, acc.image_count]
    for m in acc.methods:
        for layer in acc.layers:
            out.append(acc.class_sum[m][layer])
            out.append(torch.tensor([acc.flagged[m][layer]], dtype=torch.int64))
    for name, channels in relevance.items():
        rel = acc.relevance.get(name)
        if rel is None:
            out += [torch.zeros(acc.num_classes, channels, dtype=torch.float64),
                    torch.zeros(acc.num_classes, dtype=torch.long)]  # fmt: skip
        else:
            out += [rel.sums, rel.counts]
    return out


def _topk_state(acc: StreamAccumulator) -> dict[str, Any]:
    return {
        name: {
            "channels": t.channels,
            "feature_size": t.feature_size,
            "seen": t.seen,
            "values": t.values,
            "indices": t.indices,
            "positions": t.positions,
        }
        for name, t in acc.topk.items()
    }


def merge_stream(acc: StreamAccumulator, session: Session) -> StreamAccumulator | None:
    """Merge the accumulators of all processes into one on rank 0 (``None`` elsewhere).

    Sums (class sums and counts, mean images, flags, class-channel relevance) are reduced in
    float64; per-image records are gathered and put back in image-index order; top-k lists
    are merged with ties broken by image index; skipped images are gathered and ordered by
    index. The result equals the accumulator of one process that saw every image, up to
    the order of floating-point additions in the sums.
    """
    meta = session.all_gather_object(
        {
            "relevance": {n: r.channels for n, r in acc.relevance.items()},
            "topk": _topk_state(acc),
            "skipped": list(zip(acc.skipped_index, acc.skipped, strict=True)),
            "precision": acc.precision,
            "decode": acc.decode,
        },
        what="merging the stream pass",
    )
    relevance: dict[str, int] = {}
    for name in acc.featvis_layers:
        for m in meta:
            if name in m["relevance"]:
                relevance[name] = m["relevance"][name]
                break
    sums = session.sum_to_main(_sum_tensors(acc, relevance), what="merging the stream pass")
    rows = session.gather_rows(_rows(acc), what="merging the stream pass")
    if sums is None or rows is None:
        return None
    merged = _merged_rows(acc, np.concatenate(rows))
    it = iter(sums)
    merged.class_count, merged.image_sum, merged.image_count = next(it), next(it), next(it)
    for m in acc.methods:
        for layer in acc.layers:
            merged.class_sum[m][layer] = next(it)
            merged.flagged[m][layer] = int(next(it)[0])
    for name, channels in relevance.items():
        rel = ClassChannelRelevance(acc.num_classes, channels)
        rel.sums, rel.counts = next(it), next(it)
        merged.relevance[name] = rel
    for name, topk in merged.topk.items():
        parts = [m["topk"][name] for m in meta if m["topk"][name]["channels"] is not None]
        if not parts:
            continue
        topk.channels = parts[0]["channels"]
        topk.feature_size = parts[0]["feature_size"]
        topk.seen = sum(p["seen"] for p in parts)
        topk.values, topk.indices, topk.positions = merge_topk(
            [p["values"] for p in parts],
            [p["indices"] for p in parts],
            [p["positions"] for p in parts],
            topk.k,
        )
    skipped = sorted((s for m in meta for s in m["skipped"]), key=lambda item: item[0])
    merged.skipped_index = [i for i, _ in skipped]
    merged.skipped = [record for _, record in skipped]
    merged.precision = next((m["precision"] for m in meta if m["precision"]), None)
    merged.decode = next((m["decode"] for m in meta if m["decode"]), None)
    return merged


def _merged_rows(acc: StreamAccumulator, raw: np.ndarray) -> StreamAccumulator:
    """An empty accumulator shaped like ``acc`` holding the gathered rows in index order."""
    merged = StreamAccumulator(
        num_classes=acc.num_classes,
        channels=int(acc.image_sum.shape[1]),
        size=acc.size,
        methods=acc.methods,
        layers=acc.layers,
        featvis_layers=acc.featvis_layers,
        top_k=next(iter(acc.topk.values())).k if acc.topk else 1,
    )
    dtype = _row_dtype(acc)
    rows = np.ascontiguousarray(raw).view(dtype).reshape(-1)
    rows = rows[np.argsort(rows["index"], kind="stable")]
    if not len(rows):
        return merged
    merged.indices = [rows["index"].copy()]
    merged.labels = [rows["label"].copy()]
    merged.probs = [rows["probs"].copy()]
    if acc.layers:
        merged.hashes = [rows["hash"].copy()]
        merged.records = [rows["maps"].copy()]
        j = 0
        for m in acc.methods:
            for layer in acc.layers:
                merged.border[m][layer] = [rows["border"][:, j].copy()]
                j += 1
    return merged
