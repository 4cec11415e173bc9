"""Seeded training loop, data statistics, and transfer learning (``--init`` / ``--freeze``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from reporter.config import check_value
from reporter.data.datasets import ImageDataset, make_loader
from reporter.data.registry import DataBundle
from reporter.data.transforms import Preprocess
from reporter.errors import ReporterError
from reporter.models.build import build_model, default_input_size
from reporter.models.checkpoint import PREPROCESSING_KEYS, LoadedModel, load_model
from reporter.models.meta import ModelMeta, int_pair
from reporter.nn.hooks import unknown_layer_message
from reporter.nn.memory_format import use_channels_last
from reporter.progress import progress_bar

__all__ = [
    "TrainConfig",
    "TrainResult",
    "channel_stats",
    "freeze_up_to",
    "init_from",
    "train",
    "training_preprocessing",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run.

    Attributes:
        arch: Architecture name.
        epochs: Passes over the training split.
        lr: Peak learning rate (AdamW with a one-cycle schedule).
        batch_size: Images per step.
        seed: Seeds weights, shuffling and everything random.
        input_size: ``(H, W)``; ``None`` uses the data's natural size for gapnet and the
            architecture's default otherwise.
        init: Checkpoint to start from (transfer learning).
        freeze: Train only the layers after this dotted name.
        weight_decay: AdamW weight decay.
        device: Torch device string.
        num_workers: DataLoader workers.
        resize: ``cover`` or ``stretch`` (``None``: ``cover``).
        crop: Centre-crop fraction in (0, 1] (``None``: 1).
        channel_order: ``rgb`` or ``bgr`` (``None``: ``rgb``).
        grayscale: Make images grey before the model sees them (``None``: no).
        mean: Normalisation mean, one value or one per channel in ``channel_order``
            (``None``: measured on the training images).
        std: Normalisation std (``None``: measured on the training images).

    The last six are the stated preprocessing of
    :data:`~reporter.models.checkpoint.PREPROCESSING_KEYS` (with ``input_size``):
    :func:`training_preprocessing` applies them to the training and test data, and the
    checkpoint stores them.
    """

    arch: str = "gapnet"
    epochs: int = 3
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    input_size: tuple[int, int] | None = None
    init: str | None = None
    freeze: str | None = None
    weight_decay: float = 1e-4
    device: str = "cpu"
    num_workers: int = 0
    resize: str | None = None
    crop: float | None = None
    channel_order: str | None = None
    grayscale: bool | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        """Check the stated preprocessing as ``reporter audit`` checks it (one line each)."""
        if self.input_size is not None:
            size = int_pair(self.input_size, "input_size")
            if min(size) < 1:
                raise ReporterError(f"input_size = {list(size)} must be positive integers.")
            object.__setattr__(self, "input_size", size)
        for key in PREPROCESSING_KEYS:
            value = getattr(self, key)
            if key != "input_size" and value is not None:
                object.__setattr__(self, key, check_value(key, value))

    def stated_preprocessing(self) -> dict[str, Any]:
        """The preprocessing keys this run states (those left ``None`` are not stated)."""
        values = {k: getattr(self, k) for k in PREPROCESSING_KEYS}
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if v is not None
        }


@dataclass
class TrainResult:
    """A trained model, its metadata and the training history."""

    loaded: LoadedModel
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)


def channel_stats(
    dataset: ImageDataset, channels: int, limit: int = 512
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of up to ``limit`` unit images (before normalisation)."""
    step = max(1, len(dataset) // limit)
    xs = []
    for i in range(0, len(dataset), step):
        try:
            xs.append(dataset.load_unit(i))
        except Exception:  # noqa: BLE001 - unreadable images are recorded elsewhere
            continue
        if len(xs) >= limit:
            break
    if not xs:
        raise ReporterError("None of the training images could be read.")
    x = torch.stack(xs)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    if mean.numel() != channels:
        mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


def freeze_up_to(model: nn.Module, layer: str) -> list[str]:
    """Freeze every parameter up to and including module ``layer``; return frozen names."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ReporterError(unknown_layer_message(model, layer))
    frozen: list[str] = []
    prefix = layer + "."
    names = [n for n, _ in model.named_parameters()]
    last = max(
        (i for i, n in enumerate(names) if n.startswith(prefix)),
        default=None,
    )
    if last is None:
        raise ReporterError(f"Layer {layer!r} has no parameters to freeze up to.")
    for i, (name, param) in enumerate(model.named_parameters()):
        if i <= last:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def init_from(model: nn.Module, path: str, trust_checkpoint: bool = False) -> list[str]:
    """Copy matching weights from a checkpoint; return the names left freshly initialised.

    Weights whose shapes differ (a head for another class count) are skipped, so the head is
    replaced when the number of classes changes.
    """
    source = load_model(path, trust_checkpoint=trust_checkpoint).model.state_dict()
    target = model.state_dict()
    fresh = []
    for name, tensor in target.items():
        if name in source and source[name].shape == tensor.shape:
            target[name] = source[name]
        else:
            fresh.append(name)
    if len(fresh) == len(target):
        raise ReporterError(
            f"No weights of {path} fit this architecture; --init needs a checkpoint of the "
            "same architecture."
        )
    model.load_state_dict(target)
    return fresh


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _check_every_class_read(
    train: ImageDataset, class_names: list[str], seen: torch.Tensor, skipped: dict[str, str]
) -> None:
    """Refuse to go on training when a class had no readable training image."""
    empty = [c for c in range(len(seen)) if int(seen[c]) == 0]
    if not empty:
        return
    mine = [train.describe(i) for i in range(len(train)) if train.label(i) == empty[0]]
    example = next((f" (e.g. {p}: {skipped[p]})" for p in mine if p in skipped), "")
    names = ", ".join(repr(class_names[c]) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
    raise ReporterError(
        f"Class {names} has no readable training image: "
        + (
            f"its {len(mine)} training file{'s were' if len(mine) != 1 else ' was'} all "
            f"skipped{example}. "
            if mine
            else "the training split has none. "
        )
        + "A model cannot learn a class it never sees: fix or replace those images, or remove "
        "the class folder, then train again."
    )


#: Fewer optimizer steps than this train at a constant learning rate: OneCycleLR divides by the
#: length of its warm-up phase, which is zero steps long when ``0.25 * steps == 1``.
MIN_ONECYCLE_STEPS = 8


def lr_schedule(
    optimizer: torch.optim.Optimizer, lr: float, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle schedule over ``steps`` optimizer steps (constant ``lr`` for very short runs)."""
    if steps < MIN_ONECYCLE_STEPS:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.25
    )


def training_preprocessing(bundle: DataBundle, config: TrainConfig) -> dict[str, Any]:
    """The preprocessing a training run gives its model: what ``config`` states, the rest from
    the data and the conventions (the one rule for ``reporter train`` and a training audit).

    Not stated: the input size is the data's own for gapnet and the architecture's default
    otherwise; ``resize`` is ``cover``, ``crop`` 1, ``channel_order`` ``rgb``, ``grayscale``
    off; ``mean`` / ``std`` are measured on up to 512 training images as the model sees them
    (after the grey conversion, resize and crop; in its channel order). A stated single ``mean``
    or ``std`` value is repeated to every channel.

    Returns:
        ``input_size``, ``resize``, ``crop``, ``channel_order``, ``grayscale``, ``mean`` and
        ``std``: keyword arguments of :class:`~reporter.data.transforms.Preprocess` (with
        ``channels=bundle.channels``) and fields of :class:`~reporter.models.ModelMeta`.

    Raises:
        ReporterError: when a stated ``mean`` / ``std`` has neither 1 value nor one per
            channel of the data, or the statistics are needed and no training image is readable.
    """
    if bundle.train is None:
        raise ReporterError("Training needs a training split (--data FOLDER or --train-data).")
    channels = bundle.channels
    if config.input_size:
        size = int_pair(config.input_size, "input_size")
    elif config.arch == "gapnet":
        size = int_pair(bundle.input_size, "input_size")
    else:
        size = int_pair(default_input_size(config.arch), "input_size")
    stated: dict[str, list[float]] = {}
    for key in ("mean", "std"):
        values = getattr(config, key)
        if values is None:
            continue
        if len(values) not in (1, channels):
            give = (
                "is grey (1 channel): give 1 value"
                if channels == 1
                else f"has {channels} channels: give 1 value or {channels} (in the model's "
                "channel order)"
            )
            raise ReporterError(f"--{key} has {len(values)} values; the training data {give}.")
        stated[key] = [float(v) for v in values] * (channels if len(values) == 1 else 1)
    out: dict[str, Any] = {
        "input_size": size,
        "resize": config.resize or "cover",
        "crop": float(config.crop) if config.crop is not None else 1.0,
        "channel_order": config.channel_order or "rgb",
        "grayscale": bool(config.grayscale),
    }
    if len(stated) < 2:  # measure what the model will see, before normalisation
        geometry = {k: out[k] for k in ("resize", "crop", "grayscale")}
        bundle.set_transform(
            Preprocess(size, channels, [0.0] * channels, [1.0] * channels, **geometry)
        )
        mean, std = channel_stats(bundle.train, channels)
        if out["channel_order"] == "bgr":  # to_unit is RGB; the model's mean / std are BGR
            mean, std = mean[::-1], std[::-1]
        stated = {"mean": mean, "std": std, **stated}
    return {**out, "mean": stated["mean"], "std": stated["std"]}


def train(bundle: DataBundle, config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train ``config.arch`` on ``bundle.train`` and return the model with full metadata.

    Raises:
        ReporterError: when the bundle has no training split, or a class has no readable
            training image (checked after the first epoch, which reads every image once).
    """

    if bundle.train is None:
        raise ReporterError("Training needs a training split (--data FOLDER or --train-data).")
    _seed_everything(config.seed)
    device = torch.device(config.device)
    channels = bundle.channels
    preprocessing = training_preprocessing(bundle, config)
    size = preprocessing["input_size"]
    bundle.set_transform(Preprocess(channels=channels, **preprocessing))

    model = build_model(config.arch, len(bundle.class_names), channels)
    extra: dict[str, Any] = {}
    if config.init:
        extra["reinitialised"] = init_from(model, config.init)
    if config.freeze:
        extra["frozen"] = len(freeze_up_to(model, config.freeze))
    model.to(device)
    use_channels_last(model, (config.batch_size, channels, *size))  # CPU: 1.2x per step
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ReporterError(f"--freeze {config.freeze} leaves no parameter to train.")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loader = make_loader(
        bundle.train,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        num_workers=config.num_workers,
    )
    steps = max(1, config.epochs * len(loader))
    scheduler = lr_schedule(optimizer, config.lr, steps)
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    skipped: dict[str, str] = {}
    seen = torch.zeros(len(bundle.class_names), dtype=torch.long)
    start = time.perf_counter()
    model.train()
    for epoch in range(1, config.epochs + 1):
        total, correct, loss_sum = 0, 0, 0.0
        bar = progress_bar(loader, desc=f"train {epoch}/{config.epochs}", enabled=progress)
        for batch in bar:
            for index, reason in batch.skipped:
                skipped[bundle.train.describe(index)] = reason
            if len(batch) == 0:
                continue
            x, y = batch.images.to(device), batch.labels.to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler.last_epoch < steps:
                scheduler.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            if epoch == 1:
                seen += torch.bincount(batch.labels, minlength=len(seen))
        if epoch == 1:  # every training image has been read once now
            _check_every_class_read(bundle.train, bundle.class_names, seen, skipped)
        history.append(
            {"epoch": epoch, "loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1)}
        )
        log.info("epoch %d: loss %.4f, train accuracy %.3f", epoch, *list(history[-1].values())[1:])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    meta = ModelMeta(
        arch=config.arch,
        num_classes=len(bundle.class_names),
        class_names=list(bundle.class_names),
        channels=channels,
        data_fingerprint=bundle.fingerprint(),
        extra={
            "epochs": config.epochs,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "train_images": len(bundle.train),
            "data": bundle.name,
            "history": history,
            **extra,
        },
        **preprocessing,
    )
    seconds = time.perf_counter() - start
    return TrainResult(
        LoadedModel(model, meta, f"trained:{config.arch}", "reporter"),
        history,
        seconds,
        [{"path": p, "reason": r} for p, r in skipped.items()],
    )
