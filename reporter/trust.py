"""The trust stage: can the explanations be believed?

On a seeded sample of the audited images it computes, per method on the primary CAM layer:
the model-parameter randomization test (cascading, on copies of the model), deletion /
insertion curves and the average drop / increase in confidence, localization against object
masks when there are any, per-class shortcut scores, and the agreement between methods. The
metrics themselves are pure tensor code in :mod:`reporter.metrics.trust`; this module only
chooses the sample, computes maps and turns results into report data and figures.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from reporter.config import AuditConfig
from reporter.metrics import trust as T
from reporter.report import figures as fg
from reporter.report.findings import METHOD_TITLES
from reporter.report.sections import source_of as _source
from reporter.setup import Prepared

__all__ = [
    "CURVE_STEPS",
    "FAITHFULNESS_IMAGES",
    "SANITY_IMAGES",
    "SHORTCUT_MARGIN",
    "shortcut_accuracy",
    "trust_section",
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
    from reporter.device import model_device
    from reporter.explain import explain_batches

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


def trust_section(prep: Prepared, config: AuditConfig, stats) -> tuple[dict, dict]:
    """Compute the trust metrics on a seeded sample; return ``(audit data, figures)``."""
    preds = stats.predictions
    if not stats.layers or config.trust_samples == 0 or len(preds.labels) == 0:
        return {}, {}
    model = prep.loaded.model
    layer = stats.layers[0]
    methods = list(config.methods)
    rng = np.random.default_rng(config.seed + 7)
    n = min(config.trust_samples, len(preds.labels))
    pos = np.sort(rng.permutation(len(preds.labels))[:n])
    dataset_idx = [int(i) for i in preds.indices[pos]]
    images = torch.stack([prep.bundle.test[i][0] for i in dataset_idx])
    targets = torch.as_tensor(preds.preds[pos], dtype=torch.long)
    labels = torch.as_tensor(preds.labels[pos], dtype=torch.long)
    names = prep.bundle.class_names
    batch = config.batch_size
    maps = _maps(model, images, targets, layer, methods, batch)
    data: dict[str, Any] = {"sample": n, "layer": layer, "seed": config.seed}
    figs: dict[str, Any] = {}

    # sanity: cascading randomization on a sub-sample
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
    figs["sanity"] = fg.curves_figure(
        {
            METHOD_TITLES[m]: [1.0] + [s["spearman"] for s in data["sanity"][m]["cascade"]]
            for m in methods
        },
        xlabel="share of the network randomized (output first)",
        ylabel="rank correlation with trained maps",
        title="Randomization test",
    )

    # faithfulness
    nf = min(FAITHFULNESS_IMAGES, n)
    faith: dict[str, Any] = {}
    del_curves, ins_curves = {}, {}
    for m in methods:
        di = T.deletion_insertion(
            model,
            images[:nf],
            maps[m][:nf],
            targets[:nf],
            steps=CURVE_STEPS,
            baseline="blur",
            batch_size=max(64, batch),
        )
        cc = T.average_drop_increase(
            model, images[:nf], maps[m][:nf], targets[:nf], batch_size=max(64, batch)
        )
        summary = di.summary()
        faith[m] = {
            "deletion_auc": summary["deletion_auc"],
            "insertion_auc": summary["insertion_auc"],
            "average_drop": float(cc.drop.mean()),
            "increase_rate": float(cc.increase.float().mean()),
            "deletion_curve": summary["deletion_curve"],
            "insertion_curve": summary["insertion_curve"],
        }
        del_curves[METHOD_TITLES[m]] = summary["deletion_curve"]
        ins_curves[METHOD_TITLES[m]] = summary["insertion_curve"]
    data["faithfulness"] = {
        "images": nf,
        "steps": CURVE_STEPS,
        "baseline": "blur",
        "methods": faith,
    }
    figs["deletion"] = fg.curves_figure(
        del_curves,
        xlabel="share of pixels removed",
        ylabel="class probability",
        title="Deletion (lower is better)",
    )
    figs["insertion"] = fg.curves_figure(
        ins_curves,
        xlabel="share of pixels inserted",
        ylabel="class probability",
        title="Insertion (higher is better)",
    )

    # localization, on the images that have a mask
    from reporter.data.masks import load_masks

    masks, missing = load_masks(prep.bundle.test, dataset_idx, config.masks, prep.preprocess)
    have = torch.ones(n, dtype=torch.bool)
    if masks is not None and missing:
        have = masks.flatten(1).any(1)
        data["missing_masks"] = missing
    if masks is not None and not have.any():
        masks = None
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
    else:
        data["localization"] = None

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
    evidence_figs: dict[str, list[str]] = {}
    units = prep.preprocess.denormalize(images)
    for cname, s in scores.items():
        s["method"] = primary
        if s["flagged"]:
            s["sentence"] = _shortcut_sentence(cname, s, primary)
            evidence_figs[cname] = [
                fg.tile_uri(fg.overlay(units[kept[i]], maps[primary][kept[i]], config.colormap))
                for i in s["evidence"]
            ]
        s["evidence"] = [
            {"index": dataset_idx[int(kept[i])], "source": _source(prep, dataset_idx[int(kept[i])])}
            for i in s["evidence"]
        ]
        if s.get("lift") == float("inf"):
            s["lift"] = None
    data["shortcut"] = scores
    figs["shortcut_evidence"] = evidence_figs

    # agreement between methods
    if len(methods) > 1:
        data["agreement"] = T.agreement_summary(T.method_agreement(maps))
    else:
        data["agreement"] = None
    return data, figs


def _shortcut_sentence(cname: str, s: dict[str, Any], method: str) -> str:
    title = METHOD_TITLES[method]
    if s.get("basis") == "mask":
        return (
            f"Suspected shortcut for class “{cname}”: {s['outside_fraction']:.0%} of the "
            f"{title} saliency lies away from the object (the object and its outline cover "
            f"{s['object_area']:.0%} of the image), so the model relies on the background or "
            "context rather than the object itself."
        )
    return (
        f"Suspected shortcut for class “{cname}”: {s['border_fraction']:.0%} of the {title} "
        "saliency lies on the image border, far more than its share of the area; check the "
        "evidence images for watermarks, frames or background cues."
    )


def shortcut_accuracy(prep: Prepared, config: AuditConfig) -> dict[str, Any] | None:
    """For generated shapes data with a spurious background: accuracy with and without it.

    The model is evaluated on both test variants (background colour matching the class as in
    training, and background colour independent of the class), which shows directly how much
    of the accuracy the shortcut carries.
    """
    spurious = prep.bundle.spurious
    if spurious <= 0:
        return None
    from reporter.data import load_dataset
    from reporter.device import model_device
    from reporter.predict import predict

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
