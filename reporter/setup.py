"""Model + data setup shared by ``predict``, ``audit`` and the Python API.

:func:`prepare` loads or trains the model, loads the data, makes the classes of both agree and
attaches the model's preprocessing to the data. Training runs are cached by their configuration
so the demo trains once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reporter._version import __version__
from reporter.data import DataBundle, Preprocess, load_dataset, registered_datasets
from reporter.data.datasets import FileImageDataset, ImageDataset, TensorImageDataset
from reporter.errors import ReporterError
from reporter.models import LoadedModel, load_model, save_checkpoint
from reporter.models.checkpoint import apply_preprocessing
from reporter.nn.device import resolve_device
from reporter.nn.memory_format import use_channels_last
from reporter.train import TrainConfig, TrainResult, train

__all__ = ["Prepared", "align_classes", "default_cache_dir", "prepare"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A model and its test data, ready for inference."""

    loaded: LoadedModel
    bundle: DataBundle
    preprocess: Preprocess
    trained: TrainResult | None = None
    cached_checkpoint: str | None = None
    notes: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    """``$REPORTER_CACHE``, else ``$XDG_CACHE_HOME/reporter``, else ``~/.cache/reporter``."""
    if os.environ.get("REPORTER_CACHE"):
        return Path(os.environ["REPORTER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reporter"


def _remap(dataset: ImageDataset, mapping: dict[int, int]) -> None:
    if isinstance(dataset, TensorImageDataset):
        dataset._labels = dataset._labels.apply_(lambda v: mapping[v])
    elif isinstance(dataset, FileImageDataset):
        dataset._labels = [mapping[v] for v in dataset._labels]


def align_classes(loaded: LoadedModel, bundle: DataBundle) -> list[str]:
    """Make the data's labels index the model's outputs; return notes for the report.

    - same names, same order: nothing to do;
    - same names, other order: data labels are remapped to the model's order;
    - the model has no real names (``0 .. K-1``, from a bare state_dict): it adopts the data's;
    - different counts: a :class:`ReporterError` naming both lists.
    """
    meta = loaded.meta
    data_names = list(bundle.class_names)
    model_names = list(meta.class_names)
    notes: list[str] = []
    if meta.num_classes != len(data_names):
        raise ReporterError(
            f"The model has {meta.num_classes} output classes ({_few(model_names)}) but the data "
            f"has {len(data_names)} ({_few(data_names)}). Audit it on data with the same classes, "
            "or train a model for this data (`reporter train --data ...`)."
        )
    if model_names == data_names:
        return notes
    if sorted(model_names) == sorted(data_names):
        mapping = {i: model_names.index(n) for i, n in enumerate(data_names)}
        for ds in (bundle.train, bundle.test):
            if ds is not None:
                _remap(ds, mapping)
                ds.class_names = model_names
        bundle.class_names = model_names
        notes.append("The data's class folders were matched to the model's classes by name.")
        return notes
    if model_names == [str(i) for i in range(meta.num_classes)]:
        meta.class_names = data_names
        notes.append("The model stored no class names; the data's folder names are used.")
        return notes
    notes.append(
        "The model's class names differ from the data's folder names; outputs are matched by "
        f"position (model: {_few(model_names)}; data: {_few(data_names)})."
    )
    log.warning(notes[-1])
    meta.class_names = model_names
    for ds in (bundle.train, bundle.test):
        if ds is not None:
            ds.class_names = model_names
    bundle.class_names = model_names
    return notes


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _train_key(bundle: DataBundle, cfg: TrainConfig) -> str:
    payload = {
        "data": bundle.fingerprint(),
        "classes": bundle.class_names,
        "arch": cfg.arch,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "batch": cfg.batch_size,
        "seed": cfg.seed,
        "size": list(cfg.input_size) if cfg.input_size else None,
        "version": __version__,
    }
    stated = {k: v for k, v in cfg.stated_preprocessing().items() if k != "input_size"}
    if stated:  # only then: the cache of a run that states nothing keeps its key
        payload["preprocessing"] = stated
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def prepare(
    *,
    model: str | None,
    data: str,
    arch: str | None = None,
    train_data: str | None = None,
    test_data: str | None = None,
    split: str = "all",
    seed: int = 0,
    epochs: int = 3,
    lr: float = 3e-3,
    batch_size: int = 64,
    input_size: int | None = None,
    trust_checkpoint: bool = False,
    device: str = "auto",
    spurious: float = 0.0,
    shortcut: str = "absent",
    cache_dir: str | None = None,
    progress: bool = True,
    preprocessing: dict[str, Any] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    module: LoadedModel | None = None,
) -> Prepared:
    """Load (or train, with caching) the model and load its test data, aligned and preprocessed.

    With ``model=None`` (or an architecture name), ``arch`` is trained on the data's training
    split and the checkpoint cached under ``cache_dir`` keyed by the training configuration.
    ``preprocessing`` holds the stated keys of
    :data:`~reporter.models.checkpoint.PREPROCESSING_KEYS` (``None`` = not stated): they
    override a checkpoint's, or train the model as ``reporter train`` would
    (:func:`~reporter.train.training_preprocessing`); ``module`` is an in-memory model (the
    Python API), used as it is.
    """
    stated = {k: v for k, v in (preprocessing or {}).items() if v is not None}
    if input_size is not None:
        stated["input_size"] = input_size
    dev = resolve_device(device)
    if module is not None:
        model = None
    is_file = model is not None and (Path(model).exists() or os.sep in model or "." in model)
    checkpoint = model if is_file else None  # None: train ``model`` (an architecture) or arch
    test_only = (
        (checkpoint is not None or module is not None)
        and split == "all"
        and data not in registered_datasets()
    )
    bundle = load_dataset(
        data,
        seed=seed,
        train_path=train_data,
        test_path=test_data,
        test_only=test_only,
        spurious=spurious,
        shortcut=shortcut,
    )
    notes: list[str] = []
    trained: TrainResult | None = None
    cached: str | None = None
    if module is not None:
        loaded = module
        apply_preprocessing(loaded, stated)
        notes += align_classes(loaded, bundle)
    elif checkpoint is None:
        arch_name = model or arch or "gapnet"
        size = (input_size, input_size) if input_size else None
        cfg = TrainConfig(  # the stated preprocessing trains the model, as `reporter train`
            arch=arch_name,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            device=str(dev),
            **{k: v for k, v in stated.items() if k != "input_size"},
            input_size=size,
        )
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        ckpt = cache / f"{arch_name}-{_train_key(bundle, cfg)}.pt"
        if ckpt.exists():
            try:
                loaded = load_model(ckpt, device=dev)
                cached = str(ckpt)
                notes.append(f"Reused the model trained earlier with the same settings ({ckpt}).")
            except ReporterError:
                loaded = None
        else:
            loaded = None
        if loaded is None:
            trained = train(bundle, cfg, progress=progress)
            loaded = trained.loaded
            try:
                save_checkpoint(ckpt, loaded.model, loaded.meta)
                cached = str(ckpt)
            except (OSError, RuntimeError) as exc:
                # the cache is optional: a full disk (ENOSPC; torch.save reports it as a
                # RuntimeError), a read-only or unwritable --cache-dir is a warning, not a stop
                reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [""])[0]
                log.warning(
                    "could not cache the trained model in %s (%s); the run goes on without "
                    "the cache.",
                    cache,
                    reason,
                )
    else:
        size = (input_size, input_size) if input_size else None
        loaded = load_model(
            checkpoint,
            arch=arch,
            num_classes=len(bundle.class_names),
            class_names=bundle.class_names,
            channels=bundle.channels,
            input_size=size,
            trust_checkpoint=trust_checkpoint,
            device=dev,
            arch_kwargs=arch_kwargs,
            **{k: v for k, v in stated.items() if k != "input_size"},
        )
        notes += align_classes(loaded, bundle)
    if loaded is None:  # every branch has loaded or trained one; this tells the type checker
        raise ReporterError("No model was loaded.")
    meta = loaded.meta
    notes = list(loaded.notes) + notes
    if trained is None and module is None:  # train() chose its layout; a caller's model is theirs
        use_channels_last(loaded.model, (1, meta.channels, *meta.input_size))
    pre = Preprocess.from_meta(meta)
    bundle.set_transform(pre)
    if trained is not None:
        bundle.skipped.extend(trained.skipped)
    _check_labels(bundle)
    return Prepared(loaded, bundle, pre, trained, cached, notes)


def _check_labels(bundle: DataBundle) -> None:
    labels = bundle.test.labels
    if len(labels) == 0:
        raise ReporterError(f"The test split of {bundle.name} is empty.")
    if np.max(labels) >= len(bundle.class_names):
        raise ReporterError(
            f"The test data has labels up to {int(np.max(labels))}, but the model has only "
            f"{len(bundle.class_names)} classes; give data with the model's classes."
        )
