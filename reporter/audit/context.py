"""The parts of ``audit.json`` that describe the run rather than a stage's results: the model,
the data set and the environment."""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np
import torch
import torchvision

from reporter._version import __version__
from reporter.models import weights_sha256
from reporter.predict import Predictions
from reporter.setup import Prepared

__all__ = ["dataset_section", "environment_section", "model_section"]


def environment_section(
    device: str,
    world_size: int = 1,
    precision: dict[str, Any] | None = None,
    jpeg_decode: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Versions and hardware of the run (flat: the report's appendix shows each value).

    ``world_size`` processes shared the stream pass. From ``precision`` (what ``--precision``
    asked for and what ran, see :class:`~reporter.audit.precision.PrecisionGuard`) and
    ``jpeg_decode`` (:mod:`reporter.data.gpu_decode`) come ``precision``,
    ``precision_requested``, ``precision_check_min_pearson``, ``jpeg_decode`` (``gpu`` or
    ``cpu``) and ``jpeg_decode_check_difference``; all ``None`` without maps.
    """
    precision = precision or {}
    jpeg_decode = jpeg_decode or {}
    on_gpu = jpeg_decode.get("jpeg_on_gpu")
    return {
        "reporter": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "world_size": world_size,
        "precision": precision.get("used"),
        "precision_requested": precision.get("requested"),
        "precision_check_min_pearson": precision.get("first_batch_min_pearson"),
        "jpeg_decode": None if on_gpu is None else ("gpu" if on_gpu else "cpu"),
        "jpeg_decode_check_difference": jpeg_decode.get("first_batch_max_mean_difference"),
    }


def _model_source(prep: Prepared) -> str:
    if prep.trained is not None:
        return "trained by this run"
    if prep.cached_checkpoint and prep.loaded.source == prep.cached_checkpoint:
        return "trained by reporter earlier with the same settings (cached)"
    return str(prep.loaded.source)


def model_section(prep: Prepared) -> dict[str, Any]:
    """What model was audited: architecture, source, size, input, classes, training."""
    loaded = prep.loaded
    meta = loaded.meta
    section: dict[str, Any] = {
        "arch": meta.arch,
        "source": _model_source(prep),
        "format": loaded.kind,
        "parameters": int(sum(p.numel() for p in loaded.model.parameters())),
        "sha256": weights_sha256(loaded.model),
        "input_size": list(meta.input_size),
        "channels": meta.channels,
        "num_classes": meta.num_classes,
        "class_names": list(meta.class_names),
        "mean": list(meta.mean),
        "std": list(meta.std),
        "training_data_fingerprint": meta.data_fingerprint or None,
        "training": None,
        "notes": list(prep.notes),
    }
    extra = meta.extra or {}
    if "history" in extra:
        section["training"] = {
            "epochs": extra.get("epochs"),
            "images": extra.get("train_images"),
            "data": extra.get("data"),
            "final_train_accuracy": extra["history"][-1]["accuracy"] if extra["history"] else None,
            "seconds": round(prep.trained.seconds, 2) if prep.trained else None,
            "cached": prep.trained is None,
        }
    return section


def dataset_section(
    prep: Prepared, preds: Predictions, shortcut_check: dict[str, Any] | None
) -> dict[str, Any]:
    """What data was audited: name, counts per class, fingerprint, masks."""
    names = list(prep.bundle.class_names)
    return {
        "name": prep.bundle.name,
        "test_images": len(prep.bundle.test),
        "audited_images": len(preds.labels),
        "classes": names,
        "class_counts": np.bincount(preds.labels, minlength=len(names)).tolist(),
        "fingerprint": prep.bundle.test.fingerprint(),
        "masks": prep.bundle.masks,
        "shortcut_check": shortcut_check,
    }
