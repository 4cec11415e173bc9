"""The trust stage: can the explanations be believed?

On a seeded sample of the audited images (with finite outputs) it computes: the graded
model-parameter randomization test of every method on every reported layer (several seeds,
with the random-versus-random floor), deletion / insertion against a blur and a zero baseline
beside random maps, the average drop / increase in confidence, localization against object
masks when there are any, shortcut detection by intervention (background swap with masks, a
pasted salient region without; saliency shares only name candidates), the agreement between
methods and, for generated data with a known shortcut, accuracy with and without it. The
metrics are pure tensor code in :mod:`reporter.metrics.trust`; this stage chooses the sample and
computes the maps.
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
from reporter.metrics.trust import interventions as I
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
"""Images for deletion / insertion."""
SANITY_IMAGES = 24
"""Images for the randomization test."""
SANITY_SEEDS = (0, 1, 2)
"""Seeds of the randomized models (the random-versus-random floor compares their maps)."""
MAX_CASCADE = 8
"""Steps of the cascade at which maps are recomputed (every layer is randomized)."""
CURVE_STEPS = 12
TIE_ORDERS = 2
"""Random orders of tied pixels averaged in deletion / insertion."""
RANDOM_MAPS = 2
"""Random maps whose deletion / insertion areas are the reference a map must beat."""
FAITHFULNESS_BASELINES = ("blur", "zero")
"""What removed pixels become: a blurred copy, or zero (RISE, the data's mean colour)."""
REGION_IMAGES = 96
"""Images of the trust sample used by the mask-free region intervention."""
SHORTCUT_MARGIN = 0.05
"""Around each object mask, this fraction of the image side counts as the object's outline."""
EVIDENCE_IMAGES = 4


def _maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layers: list[str],
    methods: list[str],
    batch: int,
    *,
    normalize: bool = True,
) -> dict[str, dict[str, torch.Tensor]]:
    """``maps[method][layer]`` at input size for every method and layer, explaining
    ``targets``."""
    maps, _ = explain_batches(
        model,
        images,
        layers=layers,
        methods=methods,
        targets=targets,
        batch_size=batch,
        device=model_device(model),
        normalize=normalize,
    )
    return maps


def _sanity(model, images, targets, layers, methods, batch) -> dict[str, Any]:
    """Graded randomization of every method on every reported layer (several seeds)."""

    def explain(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = _maps(net, x, t, layers, methods, batch)
        return {f"{m}@{layer}": maps[m][layer] for m in methods for layer in layers}

    graded = T.graded_randomization(
        model, images, targets, explain, seeds=SANITY_SEEDS, max_steps=MAX_CASCADE
    )
    out: dict[str, Any] = {}
    for m in methods:
        per_layer = {}
        for layer in layers:
            entry = graded[f"{m}@{layer}"].as_dict()
            entry["method"] = m
            entry["layer"] = layer
            per_layer[layer] = entry
        # the method's status is that of the layer its galleries show
        out[m] = {**per_layer[layers[0]], "layers": per_layer}
    return out


def _faithfulness(model, images, maps, targets, methods, batch, seed) -> dict[str, Any]:
    out: dict[str, Any] = {}
    common = {"steps": CURVE_STEPS, "seed": seed, "batch_size": max(64, batch)}
    # random maps do not depend on the method: one reference serves all of them
    reference = T.random_map_reference(
        model,
        images,
        targets,
        baselines=FAITHFULNESS_BASELINES,
        random_maps=RANDOM_MAPS,
        **common,
    )
    for m in methods:
        ref = T.faithfulness_with_references(
            model,
            images,
            maps[m],
            targets,
            baselines=FAITHFULNESS_BASELINES,
            tie_orders=TIE_ORDERS,
            random_maps=RANDOM_MAPS,
            reference=reference,
            **common,
        )
        cc = T.average_drop_increase(model, images, maps[m], targets, batch_size=max(64, batch))
        out[m] = {
            "baselines": ref["baselines"],
            "average_drop": float(cc.drop.mean()),
            "increase_rate": float(cc.increase.float().mean()),
        }
    return {
        "images": len(images),
        "steps": CURVE_STEPS,
        "baselines": list(FAITHFULNESS_BASELINES),
        "ties": "random",
        "tie_orders": TIE_ORDERS,
        "random_maps": RANDOM_MAPS,
        "methods": out,
    }


def _localization(maps, raw, masks, labels, names, methods) -> dict[str, Any]:
    loc = {}
    for m in methods:
        hit = T.pointing_game(maps[m], masks)
        energy = T.energy_pointing_game(raw[m], masks)  # mass on the raw, non-negative map
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
    return {"methods": loc, "object_area": float(masks.float().mean()), "images": len(masks)}


def _region_shortcuts(model, images, labels, layers, methods, names, batch, seed):
    """The mask-free intervention for every method and layer: ``{class: [cue per setting]}``.

    Runs on the first :data:`REGION_IMAGES` images of the (already random) trust sample: each
    setting costs forward passes over the other classes' images for every class.
    """
    images, labels = images[:REGION_IMAGES], labels[:REGION_IMAGES]
    raw = _maps(model, images, labels, layers, methods, batch, normalize=False)
    out: dict[str, list[dict[str, Any]]] = {}
    for m in methods:
        for layer in layers:
            cues = T.region_shortcuts(
                model, images, labels, raw[m][layer], names, seed=seed, batch_size=max(64, batch)
            )
            for cname, cue in cues.items():
                out.setdefault(cname, []).append({"method": m, "layer": layer, **cue.as_dict()})
    return out


def trust_checks(prep: Prepared, config: AuditConfig, stream: StreamResult) -> SectionResult:
    """Compute the trust metrics on a seeded sample.

    Arrays: ``evidence_images`` ``[E, H, W, 3]`` uint8 and ``evidence_maps`` ``[E, H, W]``
    uint8: images of each flagged class with the primary method's map; each evidence item of
    ``section["shortcut"]`` names its ``row``.
    """
    preds = stream.predictions
    result = SectionResult("trust")
    if not stream.layers or config.trust_samples == 0 or len(preds.labels) == 0:
        return result
    model = prep.loaded.model
    layers = list(stream.layers)
    layer = layers[0]
    methods = list(config.methods)
    rng = np.random.default_rng(config.seed + 7)
    usable = np.flatnonzero(preds.finite)
    n = min(config.trust_samples, len(usable))
    if n == 0:
        return result
    pos = np.sort(rng.permutation(usable)[:n])
    dataset_idx = [int(i) for i in preds.indices[pos]]
    targets = torch.as_tensor(preds.preds[pos], dtype=torch.long)
    labels = torch.as_tensor(preds.labels[pos], dtype=torch.long)
    names = list(prep.bundle.class_names)
    batch = config.batch_size
    images, units, all_maps, _ = explain_images(
        prep, methods, dataset_idx, [layer], batch_size=batch, targets=targets
    )
    maps = {m: all_maps[m][layer] for m in methods}
    data: dict[str, Any] = {"sample": n, "layer": layer, "layers": layers, "seed": config.seed}

    ns = min(SANITY_IMAGES, n)
    data["sanity"] = _sanity(model, images[:ns], targets[:ns], layers, methods, batch)
    data["sanity_images"] = ns
    data["sanity_seeds"] = list(SANITY_SEEDS)
    nf = min(FAITHFULNESS_IMAGES, n)
    data["faithfulness"] = _faithfulness(
        model,
        images[:nf],
        {m: maps[m][:nf] for m in methods},
        targets[:nf],
        methods,
        batch,
        config.seed,
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
        raw = _maps(model, images[have], targets[have], [layer], methods, batch, normalize=False)
        data["localization"] = _localization(
            {m: maps[m][have] for m in methods},
            {m: raw[m][layer] for m in methods},
            masks[have],
            labels[have],
            names,
            methods,
        )

    data["shortcut"], rows = _shortcuts(
        prep, config, images, labels, maps, masks, have, layers, methods, dataset_idx
    )
    data["shortcut_rules"] = {
        "basis": "mask" if masks is not None else "region",
        "drop": I.DROP_THRESHOLD,
        "drop_interval_lower": I.CI_LOWER_THRESHOLD,
        "changed": I.CHANGE_THRESHOLD,
        "changed_interval_lower": I.CHANGE_LOWER_THRESHOLD,
        "pull": I.PULL_THRESHOLD,
        "pull_interval_lower": I.PULL_LOWER_THRESHOLD,
        "region_area": I.REGION_AREA,
        "max_region_area": I.MAX_REGION_AREA,
        "flip": I.FLIP_THRESHOLD,
        "flip_interval_lower": I.FLIP_LOWER_THRESHOLD,
    }
    data["shortcut_margin_px"] = (
        max(1, round(SHORTCUT_MARGIN * min(images.shape[-2:]))) if masks is not None else None
    )
    data["agreement"] = T.agreement_summary(T.method_agreement(maps)) if len(methods) > 1 else None
    result.section = data
    if rows:
        result.arrays = {
            "evidence_images": uint8_images(units[rows]),
            "evidence_maps": uint8_maps(maps[methods[0]][rows]),
        }
    return result


def _shortcuts(
    prep: Prepared,
    config: AuditConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: dict[str, torch.Tensor],
    masks: torch.Tensor | None,
    have: torch.Tensor,
    layers: list[str],
    methods: list[str],
    dataset_idx: list[int],
) -> tuple[dict[str, Any], list[int]]:
    """Per class: saliency statistics (candidates only) and the intervention that decides.

    With masks, each object is kept and its background replaced by another class's
    (:func:`~reporter.metrics.trust.background_swap`); without, each class's consistently
    salient region is pasted into other classes' images, for every method and layer
    (:func:`~reporter.metrics.trust.region_shortcuts`). Only the intervention flags a class.
    """
    model = prep.loaded.model
    names = list(prep.bundle.class_names)
    primary = methods[0]
    keep = have if masks is not None else torch.ones(len(images), dtype=torch.bool)
    kept = torch.nonzero(keep).flatten()
    margin = max(1, round(SHORTCUT_MARGIN * min(images.shape[-2:])))
    scores = T.shortcut_scores(
        maps[primary][keep],
        labels[keep],
        names,
        T.dilate(masks[keep], margin) if masks is not None else None,
    )
    batch = config.batch_size
    if masks is not None:
        effects = T.background_swap(
            model,
            images[keep],
            masks[keep],
            labels[keep],
            class_names=names,
            seed=config.seed,
            batch_size=max(64, batch),
        )
        interventions = {c: e.as_dict() for c, e in effects.items()}
        settings: dict[str, list[dict[str, Any]]] = {}
    else:
        settings = _region_shortcuts(
            model, images, labels, layers, methods, names, batch, config.seed
        )
        interventions = {}
        for cname, cues in settings.items():
            flagging = [c for c in cues if c["flagged"]]
            # the setting that decides: the first that flags, else the primary method and layer
            interventions[cname] = flagging[0] if flagging else cues[0]
    out: dict[str, Any] = {}
    rows: list[int] = []
    for cname, s in scores.items():
        effect = interventions.get(cname)
        flagged = bool(effect and effect.get("flagged"))
        evidence = []
        mine = [int(kept[i]) for i in s["evidence"]]
        if flagged and not mine:
            mine = [int(j) for j in torch.nonzero(labels == names.index(cname)).flatten()]
        for j in mine[:EVIDENCE_IMAGES]:
            item: dict[str, Any] = {
                "index": dataset_idx[j],
                "source": source_of(prep, dataset_idx[j]),
            }
            if flagged:
                item["row"] = len(rows)
                rows.append(j)
            evidence.append(item)
        saliency = {k: v for k, v in s.items() if k not in ("evidence", "flagged")}
        if saliency.get("lift") == float("inf"):
            saliency["lift"] = None
        out[cname] = {
            "flagged": flagged,
            "basis": "mask" if masks is not None else "region",
            "method": primary,
            "intervention": effect,
            "settings": [
                {
                    "method": c["method"],
                    "layer": c["layer"],
                    "flagged": c["flagged"],
                    "flip_rate": c.get("flip_rate"),
                    "control_flip_rate": c.get("control_flip_rate"),
                    "position": c.get("position"),
                }
                for c in settings.get(cname, [])
            ],
            "saliency": saliency,
            "level": "flagged" if flagged else saliency.get("level", "none"),
            "evidence": evidence,
        }
    return out, rows


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
