"""The trust stage: can the explanations be believed?

On a seeded sample of the audited images it computes, per method on the primary CAM layer:
the model-parameter randomization test (cascading, on copies of the model), deletion /
insertion curves and the average drop / increase in confidence, localization against object
masks when there are any, per-class shortcut scores, the agreement between methods and, for
generated data with a known shortcut, accuracy with and without it. The metrics are pure tensor
code in :mod:`reporter.metrics.trust`; this stage chooses the sample and computes the maps.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from reporter.audit.explanations import explain_images, source_of
from reporter.audit.results import SectionResult, uint8_images, uint8_maps
from reporter.audit.stream import StreamResult
from reporter.config import AuditConfig
from reporter.data import load_dataset
from reporter.data.masks import load_masks
from reporter.explain import explain_batches
from reporter.metrics import trust as T
from reporter.nn.device import model_device
from reporter.predict import predict
from reporter.setup import Prepared

__all__ = [
    "CURVE_STEPS",
    "FAITHFULNESS_IMAGES",
    "SANITY_IMAGES",
    "SHORTCUT_MARGIN",
    "shortcut_accuracy",
    "trust_checks",
]

log = logging.getLogger(__name__)

FAITHFULNESS_IMAGES = 32
"""Images for deletion / insertion (each costs 2 x (steps + 1) forward passes)."""
SANITY_IMAGES = 24
"""Images for the randomization test (one CAM pass per randomized layer)."""
CURVE_STEPS = 12
SHORTCUT_MARGIN = 0.05
"""Around each object mask, this fraction of the image side counts as the object's outline."""
MAX_CASCADE = 8


def _maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str,
    methods: list[str],
    batch: int,
) -> dict[str, torch.Tensor]:
    """Normalised maps at input size for every method on one layer, explaining ``targets``."""
    maps, _ = explain_batches(
        model,
        images,
        layers=[layer],
        methods=methods,
        targets=targets,
        batch_size=batch,
        device=model_device(model),
    )
    return {m: next(iter(by_layer.values())) for m, by_layer in maps.items()}


def _sanity(model, images, targets, layer, methods, reference, seed, batch) -> dict[str, Any]:
    # every parameter layer is randomized (output first); maps are compared at up to
    # MAX_CASCADE evenly spaced steps, always including the fully randomized model
    names = T.parameter_layers(model)
    keep = set(np.linspace(0, len(names) - 1, min(MAX_CASCADE, len(names))).round().astype(int))
    size = reference[methods[0]].shape[-2:]
    steps: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    last: dict[str, dict[str, torch.Tensor]] = {}
    for i, (name, randomized) in enumerate(
        T.randomized_copies(model, "cascading", seed=seed, layers=names)
    ):
        if i not in keep:
            continue
        maps = _maps(randomized, images, targets, layer, methods, batch)
        for m in methods:
            ref = reference[m]
            got = torch.nn.functional.interpolate(
                maps[m][:, None], size=tuple(size), mode="bilinear", align_corners=False
            )[:, 0]
            rho = T.rank_correlation(ref, got)
            sim = T.ssim(ref.clamp(0, 1), got.clamp(0, 1))
            steps[m].append(
                {
                    "randomized_down_to": name,
                    "spearman": float(rho.abs().mean()),
                    "ssim": float(sim.mean()),
                }
            )
            last[m] = {"spearman": rho, "ssim": sim}
    out = {}
    for m in methods:
        verdict = T.sanity_verdict(last[m]["spearman"], last[m]["ssim"])
        out[m] = {**verdict.as_dict(), "layer": layer, "cascade": steps[m]}
    return out


def _faithfulness(model, images, maps, targets, methods, batch) -> dict[str, Any]:
    n = len(images)
    out: dict[str, Any] = {}
    for m in methods:
        di = T.deletion_insertion(
            model,
            images,
            maps[m],
            targets,
            steps=CURVE_STEPS,
            baseline="blur",
            batch_size=max(64, batch),
        )
        cc = T.average_drop_increase(model, images, maps[m], targets, batch_size=max(64, batch))
        summary = di.summary()
        out[m] = {
            "deletion_auc": summary["deletion_auc"],
            "insertion_auc": summary["insertion_auc"],
            "average_drop": float(cc.drop.mean()),
            "increase_rate": float(cc.increase.float().mean()),
            "deletion_curve": summary["deletion_curve"],
            "insertion_curve": summary["insertion_curve"],
        }
    return {"images": n, "steps": CURVE_STEPS, "baseline": "blur", "methods": out}


def trust_checks(prep: Prepared, config: AuditConfig, stream: StreamResult) -> SectionResult:
    """Compute the trust metrics on a seeded sample.

    Arrays: ``evidence_images`` ``[E, H, W, 3]`` uint8 and ``evidence_maps`` ``[E, H, W]``
    uint8: the images (with the primary method's map) that show a flagged class's shortcut
    score best; each evidence item of ``section["shortcut"]`` names its ``row``.
    """
    preds = stream.predictions
    result = SectionResult("trust")
    if not stream.layers or config.trust_samples == 0 or len(preds.labels) == 0:
        return result
    model = prep.loaded.model
    layer = stream.layers[0]
    methods = list(config.methods)
    rng = np.random.default_rng(config.seed + 7)
    n = min(config.trust_samples, len(preds.labels))
    pos = np.sort(rng.permutation(len(preds.labels))[:n])
    dataset_idx = [int(i) for i in preds.indices[pos]]
    targets = torch.as_tensor(preds.preds[pos], dtype=torch.long)
    labels = torch.as_tensor(preds.labels[pos], dtype=torch.long)
    names = list(prep.bundle.class_names)
    batch = config.batch_size
    images, units, all_maps, _ = explain_images(
        prep, methods, dataset_idx, [layer], batch_size=batch, targets=targets
    )
    maps = {m: all_maps[m][layer] for m in methods}
    data: dict[str, Any] = {"sample": n, "layer": layer, "seed": config.seed}

    ns = min(SANITY_IMAGES, n)
    data["sanity"] = _sanity(
        model,
        images[:ns],
        targets[:ns],
        layer,
        methods,
        {m: maps[m][:ns] for m in methods},
        config.seed,
        batch,
    )
    data["sanity_images"] = ns
    nf = min(FAITHFULNESS_IMAGES, n)
    data["faithfulness"] = _faithfulness(
        model, images[:nf], {m: maps[m][:nf] for m in methods}, targets[:nf], methods, batch
    )

    # localization, on the images that have a mask
    masks, missing = load_masks(prep.bundle.test, dataset_idx, config.masks, prep.preprocess)
    have = torch.ones(n, dtype=torch.bool)
    if masks is not None and missing:
        have = masks.flatten(1).any(1)
        data["missing_masks"] = missing
    if masks is not None and not have.any():
        masks = None
    data["localization"] = None
    if masks is not None:
        loc = {}
        for m in methods:
            hit = T.pointing_game(maps[m][have], masks[have])
            energy = T.energy_pointing_game(maps[m][have], masks[have])
            loc[m] = {
                "pointing_game": float(hit.float().mean()),
                "energy_inside": float(energy.mean()),
                "per_class": {
                    c: {"pointing_game": v["mean"], "n": v["n"]}
                    for c, v in T.per_class(hit, labels, names).items()
                },
                "energy_per_class": {
                    c: v["mean"] for c, v in T.per_class(energy, labels, names).items()
                },
            }
        data["localization"] = {"methods": loc, "object_area": float(masks.float().mean())}

    # shortcut, on the first method's maps (with masks: on the images that have one). A class
    # activation map cannot be sharper than its layer and an object's outline is part of the
    # object, so a margin of SHORTCUT_MARGIN of the image side around the mask counts as object.
    primary = methods[0]
    keep = have if masks is not None else torch.ones(n, dtype=torch.bool)
    kept = torch.nonzero(keep).flatten()
    margin = max(1, round(SHORTCUT_MARGIN * min(images.shape[-2:])))
    scores = T.shortcut_scores(
        maps[primary][keep],
        labels[keep],
        names,
        T.dilate(masks[keep], margin) if masks is not None else None,
    )
    data["shortcut_margin_px"] = margin if masks is not None else None
    rows: list[int] = []
    for s in scores.values():
        s["method"] = primary
        evidence = []
        for i in s["evidence"]:
            j = int(kept[i])
            item: dict[str, Any] = {
                "index": dataset_idx[j],
                "source": source_of(prep, dataset_idx[j]),
            }
            if s["flagged"]:
                item["row"] = len(rows)
                rows.append(j)
            evidence.append(item)
        s["evidence"] = evidence
        if s.get("lift") == float("inf"):
            s["lift"] = None
    data["shortcut"] = scores
    data["agreement"] = T.agreement_summary(T.method_agreement(maps)) if len(methods) > 1 else None
    result.section = data
    if rows:
        result.arrays = {
            "evidence_images": uint8_images(units[rows]),
            "evidence_maps": uint8_maps(maps[primary][rows]),
        }
    return result


def shortcut_accuracy(prep: Prepared, config: AuditConfig) -> dict[str, Any] | None:
    """For generated shapes data with a spurious background: accuracy with and without it.

    The model is evaluated on both test variants (background colour matching the class as in
    training, and background colour independent of the class): an intervention that shows
    directly how much of the accuracy the shortcut carries.
    """
    spurious = prep.bundle.spurious
    if spurious <= 0:
        return None
    out: dict[str, Any] = {"spurious": spurious}
    for variant in ("kept", "absent"):
        bundle = load_dataset(
            "shapes",
            seed=config.seed,
            spurious=spurious,
            shortcut=variant,
            size=prep.loaded.meta.input_size[0],
        )
        bundle.set_transform(prep.preprocess)
        preds = predict(
            prep.loaded.model, bundle.test, device=model_device(prep.loaded.model), progress=False
        )
        out[f"accuracy_shortcut_{variant}"] = float((preds.preds == preds.labels).mean())
    return out
