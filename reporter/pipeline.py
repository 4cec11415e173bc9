"""``run_audit``: the whole audit, stage by stage. Never imports click.

Data flow: config -> model + data (:mod:`reporter.setup`) -> one streamed pass per batch that
yields predictions, CAMs for every method and layer, running class-mean maps, per-image
saliency statistics, top-k activations and class-relevant channels (nothing per-dataset is held
at full resolution) -> galleries (maps recomputed for the few images shown) -> feature
visualization -> trust metrics on a sample -> the report context (audit.json) -> HTML and PDF,
written atomically.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reporter.config import AuditConfig
from reporter.data.datasets import make_loader
from reporter.device import model_device
from reporter.errors import ReporterError
from reporter.metrics.trust.shortcut import border_fraction
from reporter.predict import Predictions, collect_predictions, predict, record_skipped
from reporter.progress import progress_bar
from reporter.setup import Prepared, prepare

__all__ = ["AuditResult", "StreamStats", "run_audit", "select_gallery", "stream_pass"]

log = logging.getLogger(__name__)

GRADIENT_FREE = ("eigencam", "scorecam", "cam")
STATS_SIDE = 64
BORDER_BAND = 0.15
"""Border band width (fraction of each side) of the per-image saliency statistics."""


@dataclass
class AuditResult:
    """What :func:`run_audit` returns.

    Attributes:
        audit: The report context, exactly as written to ``audit.json``.
        paths: Written files by format (``html``, ``pdf``, ``json``, ``modelcard``, ``config``).
        seconds: Wall time of the run.
        summary: One line describing what was audited.
    """

    audit: dict[str, Any]
    paths: dict[str, Path]
    seconds: float
    summary: str


class Timer:
    """Wall time per named stage; announces each stage on stderr when ``announce``."""

    def __init__(self, announce: bool = False) -> None:
        self.seconds: dict[str, float] = {}
        self.announce = announce

    @contextmanager
    def __call__(self, stage: str, message: str | None = None) -> Iterator[None]:
        if self.announce and message:
            from tqdm import tqdm

            tqdm.write(f"reporter: {message}", file=sys.stderr)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class StreamStats:
    """Everything the streamed audit pass keeps (small; independent of image resolution).

    Attributes:
        predictions: Per-image probabilities, labels and dataset indices.
        layers: Resolved CAM layer names.
        featvis_layers: Resolved layers whose channels are tracked.
        border: ``border[method][layer]``: per-image fraction of saliency in the border band.
        flagged: ``flagged[method][layer]``: count of all-zero or NaN maps.
        class_sum: ``class_sum[method][layer]``: ``[K, S, S']`` sum of normalised maps over the
            correctly classified images of each class.
        class_count: ``[K]`` number of correctly classified images per class.
        image_sum: ``[K, C, S, S']`` sum of the (display) images of each class.
        image_count: ``[K]`` images per class.
        topk: Per featvis layer, a :class:`~reporter.featvis.TopKActivations`.
        relevance: Per featvis layer, a :class:`~reporter.featvis.ClassChannelRelevance`.
        seconds_per_image: Time of the pass per image.
    """

    predictions: Predictions
    layers: list[str]
    featvis_layers: list[str]
    border: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    flagged: dict[str, dict[str, int]] = field(default_factory=dict)
    class_sum: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    class_count: torch.Tensor | None = None
    image_sum: torch.Tensor | None = None
    image_count: torch.Tensor | None = None
    topk: dict[str, Any] = field(default_factory=dict)
    relevance: dict[str, Any] = field(default_factory=dict)
    seconds_per_image: float = 0.0


def _stats_size(input_size: tuple[int, int]) -> tuple[int, int]:
    h, w = input_size
    scale = min(1.0, STATS_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def audit_indices(prep: Prepared, config: AuditConfig) -> np.ndarray:
    """The test images to audit: all, or a seeded stratified subset of ``max_images``."""
    n = len(prep.bundle.test)
    if config.max_images is None or config.max_images >= n:
        return np.arange(n)
    labels = prep.bundle.test.labels
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    # round-robin over classes so small subsets still cover every class
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(labels[i]), []).append(int(i))
    picked: list[int] = []
    while len(picked) < config.max_images:
        for c in sorted(by_class):
            if by_class[c] and len(picked) < config.max_images:
                picked.append(by_class[c].pop())
    return np.sort(np.array(picked, dtype=np.int64))


def stream_pass(
    prep: Prepared, config: AuditConfig, indices: np.ndarray, *, progress: bool
) -> StreamStats:
    """One pass over the test images: predictions, CAMs, running statistics, top-k channels.

    For a model that cannot be hooked (TorchScript) only predictions are computed.
    """
    from reporter.explain import CamEngine
    from reporter.featvis import ClassChannelRelevance, TopKActivations

    model = prep.loaded.model
    test = prep.bundle.test
    k = len(prep.bundle.class_names)
    meta = prep.loaded.meta
    device = model_device(model)
    size = _stats_size(meta.input_size)
    loader = make_loader(test, batch_size=config.batch_size, indices=indices.tolist())
    probs, labels, idx = [], [], []
    skipped: list[dict[str, str]] = []
    start = time.perf_counter()
    image_sum = torch.zeros(k, meta.channels, *size)
    image_count = torch.zeros(k)
    if not prep.loaded.hookable:
        preds = predict(
            model,
            test,
            batch_size=config.batch_size,
            device=device,
            progress=progress,
            indices=indices.tolist(),
        )
        return StreamStats(preds, [], [], seconds_per_image=_per_image(start, preds))

    methods = list(config.methods)
    featvis_requests = [n for n in config.featvis_layers if n != "auto"]
    want_featvis = config.featvis_channels > 0 and bool(config.featvis_layers)
    record = featvis_requests if want_featvis else []
    sample_shape = (meta.channels, *meta.input_size)
    with CamEngine(
        model,
        layers=list(config.layers),
        methods=methods,
        device=device,
        record=record,
        input_shape=sample_shape,
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
            class_count.index_add_(0, y[correct], torch.ones(int(correct.sum())))
            unit = prep.preprocess.denormalize(batch.images)
            unit = F.interpolate(
                unit, size=size, mode="bilinear", align_corners=False, antialias=True
            )
            image_sum.index_add_(0, y, unit)
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
    return StreamStats(
        predictions=preds,
        layers=layers,
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
        seconds_per_image=_per_image(start, preds),
    )


def _per_image(start: float, preds: Predictions) -> float:
    return (time.perf_counter() - start) / max(1, len(preds.labels))


def select_gallery(preds: Predictions, n: int) -> dict[int, dict[str, list[int]]]:
    """Per class: positions (into ``preds``) of the most and least confident correct
    predictions and of the misclassified images (most confidently wrong first)."""
    out: dict[int, dict[str, list[int]]] = {}
    conf = preds.confidence
    pred = preds.preds
    for c in np.unique(preds.labels):
        mine = np.flatnonzero(preds.labels == c)
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
    prep: Prepared, config: AuditConfig, dataset_indices: list[int], layers: list[str]
) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]]]:
    """Recompute maps (upsampled to the input size, normalised) for a few images.

    Returns:
        ``(unit_images [N, C, H, W] in [0, 1], maps[method][layer] [N, H, W],
        flags[method][layer] [N])``.
    """
    from reporter.explain import explain_batches

    test = prep.bundle.test
    model = prep.loaded.model
    xs = []
    for i in dataset_indices:
        x, _, _, err = test[i]
        if x is None:  # pragma: no cover - it was readable during the pass
            raise ReporterError(f"{test.describe(i)} became unreadable during the run: {err}")
        xs.append(x)
    images = torch.stack(xs)
    maps, flags = explain_batches(
        model,
        images,
        layers=layers,
        methods=list(config.methods),
        batch_size=config.batch_size,
        device=model_device(model),
    )
    return prep.preprocess.denormalize(images), maps, flags


def run_audit(config: AuditConfig, *, argv: list[str] | None = None) -> AuditResult:
    """Run the whole audit described by ``config`` and write the report files.

    Args:
        config: The audit configuration.
        argv: The command line that started the run (recorded in the appendix).

    Returns:
        An :class:`AuditResult` with the context written to ``audit.json`` and the paths.

    Raises:
        ReporterError: for bad input; nothing in ``config.out`` is changed then.
    """
    from reporter.report.build import build_report
    from reporter.report.writer import write_outputs

    progress = not config.quiet
    timer = Timer(announce=progress)
    start = time.perf_counter()
    out = Path(config.out)
    _check_output_folder(out)
    torch.manual_seed(config.seed)
    with timer("setup", "loading the model and data (training if needed)"):
        prep = prepare(
            model=config.model,
            data=config.data,
            arch=config.arch,
            train_data=config.train_data,
            test_data=config.test_data,
            split=config.split,
            seed=config.seed,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            input_size=config.input_size,
            trust_checkpoint=config.trust_checkpoint,
            device=config.device,
            spurious=config.spurious,
            shortcut=config.shortcut,
            cache_dir=config.cache_dir,
            progress=progress,
        )
    indices = audit_indices(prep, config)
    with timer("explain", f"predicting and explaining {len(indices)} images"):
        stats = stream_pass(prep, config, indices, progress=progress)
    if len(stats.predictions.labels) == 0:
        raise ReporterError(
            f"None of the {len(indices)} test images could be read; see the reasons with "
            "`reporter predict MODEL --data ... --json -`."
        )
    report = build_report(prep, config, stats, timer, argv=argv or [])
    with timer("render", f"writing {', '.join(config.formats)} to {out}"):
        paths = write_outputs(report, config, out)
    seconds = time.perf_counter() - start
    summary = (
        f"{prep.loaded.meta.arch} on {len(stats.predictions.labels)} images of "
        f"{prep.bundle.name} (accuracy {report.audit['metrics']['accuracy']:.1%})"
    )
    return AuditResult(report.audit, paths, seconds, summary)


def _check_output_folder(out: Path) -> None:
    """Refuse an output folder that cannot be written before any work is done."""
    if out.exists() and not out.is_dir():
        raise ReporterError(f"--out {out} is a file; give a folder for the report.")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ReporterError(
            f"Cannot write the report to {out}: {parent} is a file, not a folder. "
            "Choose another --out."
        )
    if not os.access(parent, os.W_OK):
        raise ReporterError(f"Cannot write to {parent}: permission denied. Choose another --out.")


def first_conv(model: nn.Module) -> str | None:
    """Name of the first ``nn.Conv2d`` (for the filter grid)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    return None
