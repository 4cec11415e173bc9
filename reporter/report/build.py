"""Assemble the report context (``audit.json``) and the figures from the pipeline's results."""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torchvision

import reporter
from reporter.config import AuditConfig
from reporter.metrics import classification_metrics
from reporter.models import weights_sha256
from reporter.pipeline import BORDER_BAND
from reporter.report import figures as fg
from reporter.report.findings import METHOD_TITLES, key_findings
from reporter.report.sections import class_average_section, featvis_section, gallery_section
from reporter.setup import Prepared

__all__ = ["METHOD_INFO", "SCHEMA_VERSION", "Report", "build_report"]

SCHEMA_VERSION = 1

METHOD_INFO: dict[str, dict[str, str]] = {
    "cam": {
        "shows": "The class's final-layer weights applied to the last feature maps; exact for "
        "networks that end in global average pooling and one linear layer.",
        "cost": "one forward pass",
        "reference": "Zhou et al., 2016",
    },
    "gradcam": {
        "shows": "Feature maps weighted by their mean gradient for the class: the regions whose "
        "features raise the class score.",
        "cost": "one forward and one backward pass (shared by all gradient methods)",
        "reference": "Selvaraju et al., 2017",
    },
    "gradcam++": {
        "shows": "Like Grad-CAM with pixel-wise weights that favour every instance of the "
        "object, not only the strongest one.",
        "cost": "shared forward and backward pass",
        "reference": "Chattopadhay et al., 2018",
    },
    "xgradcam": {
        "shows": "Grad-CAM with activation-normalised weights, chosen to satisfy sensitivity "
        "and conservation axioms.",
        "cost": "shared forward and backward pass",
        "reference": "Fu et al., 2020",
    },
    "layercam": {
        "shows": "Element-wise positive gradients times activations: finer maps, usable on "
        "early layers.",
        "cost": "shared forward and backward pass",
        "reference": "Jiang et al., 2021",
    },
    "hirescam": {
        "shows": "Element-wise gradients times activations without averaging: faithful to "
        "what the layer contributes at each position.",
        "cost": "shared forward and backward pass",
        "reference": "Draelos and Carin, 2020",
    },
    "eigencam": {
        "shows": "The first principal component of the feature maps: where the dominant "
        "features are, independent of the class.",
        "cost": "no gradient; a small eigen-problem per image",
        "reference": "Muhammad and Yeasin, 2020",
    },
    "scorecam": {
        "shows": "Each feature map used as a mask on the input and weighted by the class "
        "score it keeps: no gradients, slower.",
        "cost": "one forward pass per channel of the layer",
        "reference": "Wang et al., 2020",
    },
}


@dataclass
class Report:
    """The context written to ``audit.json`` and the figures the templates embed."""

    audit: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)


def _environment(device: str) -> dict[str, Any]:
    return {
        "reporter": reporter.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
    }


def _model_source(prep: Prepared) -> str:
    if prep.trained is not None:
        return "trained by this run"
    if prep.cached_checkpoint and prep.loaded.source == prep.cached_checkpoint:
        return "trained by reporter earlier with the same settings (cached)"
    return prep.loaded.source


def _model_section(prep: Prepared) -> dict[str, Any]:
    loaded = prep.loaded
    meta = loaded.meta
    model = loaded.model
    params = sum(p.numel() for p in model.parameters())
    section = {
        "arch": meta.arch,
        "source": _model_source(prep),
        "format": loaded.kind,
        "parameters": int(params),
        "sha256": weights_sha256(model),
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


def build_report(prep: Prepared, config: AuditConfig, stats, timer, *, argv: list[str]) -> Report:
    """Compute the remaining sections and assemble the context and figures.

    Args:
        prep: Model and data.
        config: The audit configuration.
        stats: The :class:`~reporter.pipeline.StreamStats` of the audit pass.
        timer: The pipeline's :class:`~reporter.pipeline.Timer` (stages are added to it).
        argv: The command line, for the appendix.
    """
    from reporter.device import model_device

    preds = stats.predictions
    names = list(prep.bundle.class_names)
    metrics = classification_metrics(preds.probs, preds.labels, names)
    correct = preds.preds == preds.labels
    metrics["confident_mistakes"] = int(((~correct) & (preds.confidence > 0.9)).sum())
    figures: dict[str, Any] = {
        "confusion": fg.confusion_figure(metrics["confusion_matrix"], names),
        "reliability": fg.reliability_figure(metrics["reliability"], metrics["ece"]),
        "confidence": fg.confidence_histogram(
            preds.confidence[correct], preds.confidence[~correct]
        ),
        "colorbar": fg.colorbar_uri(config.colormap),
    }
    from reporter.trust import shortcut_accuracy, trust_section

    explanations: dict[str, Any] = {"methods": [], "layers": stats.layers}
    featvis: dict[str, Any] = {}
    trust: dict[str, Any] = {}
    if stats.layers:
        explanations["methods"] = [
            {"name": m, "title": METHOD_TITLES[m], **METHOD_INFO[m]} for m in config.methods
        ]
        explanations["seconds_per_image"] = stats.seconds_per_image
        explanations["flagged"] = stats.flagged
        explanations["flagged_maps"] = int(
            sum(v for d in stats.flagged.values() for v in d.values())
        )
        with timer("galleries", "galleries"):
            gallery, figures["gallery"] = gallery_section(prep, config, stats)
        explanations["galleries"] = gallery
        class_avg, figures["class_average"] = class_average_section(prep, config, stats)
        explanations["class_average"] = class_avg
        explanations["border_summary"] = _border_summary(config, stats, names)
        with timer("featvis", "feature visualization"):
            featvis, figures["featvis"] = featvis_section(prep, config, stats)
        with timer("trust", "trust checks (sanity, faithfulness, localization, shortcuts)"):
            trust, figures["trust"] = trust_section(prep, config, stats)
    else:
        explanations["unavailable"] = (
            "Class activation maps and feature visualization need a model whose layers can be "
            "hooked; this TorchScript model only allows predictions. Audit the original "
            "nn.Module (a state_dict plus --arch) to get them."
        )
    skipped = list(prep.bundle.skipped) + list(preds.skipped)
    audit: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "title": f"Model audit: {prep.loaded.meta.arch} on {prep.bundle.name}",
        "model": _model_section(prep),
        "dataset": {
            "name": prep.bundle.name,
            "test_images": len(prep.bundle.test),
            "audited_images": len(preds.labels),
            "classes": names,
            "class_counts": np.bincount(preds.labels, minlength=len(names)).tolist(),
            "fingerprint": prep.bundle.test.fingerprint(),
            "masks": prep.bundle.masks,
            "shortcut_check": shortcut_accuracy(prep, config),
        },
        "metrics": metrics,
        "explanations": explanations,
        "featvis": featvis,
        "trust": trust,
        "findings": [],
        "skipped": skipped,
        "timings": {k: round(v, 3) for k, v in timer.seconds.items()},
        "environment": _environment(str(model_device(prep.loaded.model))),
        "config": config.to_dict(),
        "command": shlex.join(argv) if argv else None,
        "model_card": dict(config.model_card),
    }
    audit["findings"] = key_findings(audit)
    return Report(audit=audit, figures=figures)


def _border_summary(config: AuditConfig, stats, names: list[str]) -> dict[str, Any] | None:
    method = config.methods[0]
    layer = stats.layers[0]
    values = stats.border[method][layer]
    if not len(values):
        return None
    labels = stats.predictions.labels
    per_class = {names[c]: float(values[labels == c].mean()) for c in np.unique(labels)}
    worst = max(per_class, key=per_class.get) if per_class else None
    from reporter.metrics.trust.shortcut import border_share

    side = stats.class_sum[method][layer].shape[-2:]
    area = border_share(int(side[0]), int(side[1]), BORDER_BAND)
    return {
        "method": method,
        "layer": layer,
        "band": BORDER_BAND,
        "area": area,
        "mean": float(values.mean()),
        "class": worst,
        "class_value": per_class.get(worst) if worst else None,
    }
