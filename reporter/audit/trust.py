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

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from reporter.audit.explanations import load_images, source_of
from reporter.audit.results import SectionResult, uint8_images, uint8_maps
from reporter.audit.stream import StreamResult
from reporter.audit.trust_budget import TrustPlan, check_costs, plan_trust
from reporter.config import AuditConfig
from reporter.data import load_dataset
from reporter.data.masks import load_masks
from reporter.explain import explain_batches
from reporter.explain.result import normalize_maps
from reporter.metrics import trust as T
from reporter.metrics.trust import interventions as I
from reporter.nn.device import model_device
from reporter.nn.memory_format import channels_last_works
from reporter.predict import predict
from reporter.setup import Prepared

__all__ = [
    "CURVE_STEPS",
    "FAITHFULNESS_IMAGES",
    "OBJECT_DEFINITION",
    "SANITY_IMAGES",
    "SHORTCUT_EXAMPLES",
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
TIE_ORDERS = 1
"""Random orders of tied pixels per image in deletion / insertion. One random order is an
unbiased draw of the tie order and the mean over the images averages it; a second order per
image doubles the passes of every tied map for little less variance."""
RANDOM_MAPS = 1
"""Random maps per image whose deletion / insertion areas are the reference a map must beat
(a fresh one per image: the mean over the images is the reference)."""
FAITHFULNESS_BASELINES = ("blur", "zero")
"""What removed pixels become: a blurred copy, or zero (RISE, the data's mean colour)."""
REGION_IMAGES = 96
"""Images of the trust sample used by the mask-free region intervention."""
OBJECT_DEFINITION = (
    "the object is the mask's pixels (no outline margin); energy inside is the share of the "
    "raw, non-negative map's mass on those pixels"
)
"""The one definition of the object's area and of energy inside it, used by the localization
table and the shortcut statistics alike (stated in ``trust.object_definition``)."""
EVIDENCE_IMAGES = 4
SHORTCUT_RULE_KEYS = (
    "drop",
    "drop_interval_lower",
    "changed",
    "changed_interval_lower",
    "pull",
    "pull_interval_lower",
    "region_area",
    "max_region_area",
    "flip",
    "flip_interval_lower",
)
"""The ``[trust]`` keys recorded in ``trust.shortcut_rules`` (their names there)."""
SHORTCUT_EXAMPLES = 8
"""Intervened images that the cue made the model get wrong, kept for page 1 (at most)."""


def _maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layers: list[str],
    methods: list[str],
    batch: int,
    *,
    normalize: bool = True,
    channels_last: bool | None = None,
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
        channels_last=channels_last,
    )
    return maps


def _sanity(model, images, targets, layers, methods, batch, settings) -> dict[str, Any]:
    """Graded randomization of every method on every reported layer (several seeds)."""
    # the randomized copies have the trained model's layers and layout: its probe's verdict
    # holds for them (no probe per copy)
    nhwc = channels_last_works(model, images[:1]) if len(images) else None

    def explain(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = _maps(net, x, t, layers, methods, batch, channels_last=nhwc)
        return {f"{m}@{layer}": maps[m][layer] for m in methods for layer in layers}

    graded = T.graded_randomization(
        model,
        images,
        targets,
        explain,
        seeds=tuple(range(settings["sanity_seeds"])),
        max_steps=MAX_CASCADE,
        spearman_threshold=settings["sanity_spearman"],
        ssim_threshold=settings["sanity_ssim"],
        n_boot=settings["bootstrap"],
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


def region_rules(settings: dict[str, Any]) -> dict[str, Any]:
    """The region search's keyword arguments from the ``[trust]`` settings."""
    return {
        "area": settings["region_area"],
        "max_area": settings["max_region_area"],
        "flip_threshold": settings["flip"],
        "flip_lower": settings["flip_interval_lower"],
        "n_boot": settings["bootstrap"],
    }


@dataclass
class RegionInputs:
    """What the region search needs on the first images of the (already random) trust
    sample, computed before the budget is planned (it measures the model's costs):
    ``candidates`` ``{"method@layer": [R, H, W]}`` raw maps explaining the true labels and
    ``before`` ``[R]`` the model's predictions on the intact images."""

    candidates: dict[str, torch.Tensor]
    before: torch.Tensor
    explain_s: float
    forward_s: float


def _region_inputs(model, images, labels, layers, methods, batch) -> RegionInputs:
    """Maps of every method and layer and the predictions on ``images``, each timed (seconds
    per image of one explanation pass and of one forward pass: the budget's measurements)."""
    start = time.perf_counter()
    raw = _maps(model, images, labels, layers, methods, batch, normalize=False)
    explained = time.perf_counter()
    before = I._predict(model, images, max(64, batch))
    done = time.perf_counter()
    n = max(1, len(images))
    return RegionInputs(
        candidates={f"{m}@{layer}": raw[m][layer] for m in methods for layer in layers},
        before=before,
        explain_s=(explained - start) / n,
        forward_s=(done - explained) / n,
    )


def interleaved_by_class(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order of ``labels``'s positions in which every prefix is balanced over the classes:
    each class's positions in random order, then taken one per class in turn (classes in
    random order, the same in every round), so the first ``k * classes`` positions hold ``k``
    of each class that has that many.

    Returns:
        A permutation of ``range(len(labels))``.
    """
    labels = np.asarray(labels)
    classes = rng.permutation(np.unique(labels))
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    order: list[int] = []
    depth = 0
    while len(order) < len(labels):
        order.extend(int(q[depth]) for q in queues if depth < len(q))
        depth += 1
    return np.asarray(order, dtype=np.int64)


def _region_search(model, images, labels, inputs: RegionInputs, names, batch, seed, settings):
    """The region intervention, ``{class: CueSearch}``: each class's box proposed by every
    method and layer and by the pixel contrast, the one whose paste moves the predictions most
    kept (:func:`~reporter.metrics.trust.search_region_cues`).

    Runs on the first ``region_images`` images of the (already random) trust sample (the
    budget's plan).
    """
    n = settings["region_images"]
    return T.search_region_cues(
        model,
        images[:n],
        labels[:n],
        {k: v[:n] for k, v in inputs.candidates.items()},
        names,
        seed=seed,
        batch_size=max(64, batch),
        before=inputs.before[:n],
        **region_rules(settings),
    )


def _plan(
    settings: dict[str, Any],
    n: int,
    images: torch.Tensor,
    labels: torch.Tensor,
    inputs: RegionInputs,
    methods: list[str],
    names: list[str],
    spent: float,
) -> TrustPlan:
    """The budget's plan (:mod:`reporter.audit.trust_budget`) from the measured costs and the
    region search's proposals (their distinct boxes fix its forward passes)."""
    r = len(inputs.before)
    proposals = T.region_proposals(
        images[:r], labels[:r], inputs.candidates, names, area=settings["region_area"]
    )
    passes = T.search_forward_passes(labels[:r], proposals, names) / max(1, r)
    costs = check_costs(
        methods=len(methods),
        sanity_seeds=settings["sanity_seeds"],
        cascade_steps=MAX_CASCADE,
        baselines=len(FAITHFULNESS_BASELINES),
        tie_orders=TIE_ORDERS,
        random_maps=RANDOM_MAPS,
        curve_steps=CURVE_STEPS,
        region_passes_per_image=passes,
    )
    requested = {
        "sanity": min(settings["sanity_images"], n),
        "faithfulness": min(settings["faithfulness_images"], n),
        "region": r,
    }
    return plan_trust(
        settings["budget_seconds"],
        requested,
        costs,
        explain_s=inputs.explain_s,
        forward_s=inputs.forward_s,
        spent_seconds=spent,
        classes=len(set(labels[:r].tolist())),
    )


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
    # the checks take prefixes of the sample (sanity_images, faithfulness_images,
    # region_images): order it so that every prefix holds every class alike
    pos = pos[interleaved_by_class(preds.labels[pos], rng)]
    dataset_idx = [int(i) for i in preds.indices[pos]]
    targets = torch.as_tensor(preds.preds[pos], dtype=torch.long)
    labels = torch.as_tensor(preds.labels[pos], dtype=torch.long)
    names = list(prep.bundle.class_names)
    batch = config.batch_size
    seconds: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        seconds[name] = round(seconds.get(name, 0.0) + now - tick, 3)
        tick = now

    images, units = load_images(prep, dataset_idx)
    # one pass of the engine: raw (non-negative) maps for energy and every saliency share, and
    # their min-max normalisation (what the engine's normalize=True gives) for the rest
    raw_all = _maps(model, images, targets, [layer], methods, batch, normalize=False)
    raw = {m: raw_all[m][layer] for m in methods}
    maps = {m: normalize_maps(raw[m]) for m in methods}
    data: dict[str, Any] = {"sample": n, "layer": layer, "layers": layers, "seed": config.seed}
    data["seconds"] = seconds  # where the stage's time goes, per check

    data["settings"] = dict(config.trust)
    lap("maps")
    # the region search's maps and predictions, timed: the budget's measurements
    r = min(config.trust["region_images"], n)
    region = _region_inputs(model, images[:r], labels[:r], layers, methods, batch)
    lap("region_maps")
    plan = _plan(config.trust, n, images, labels, region, methods, names, sum(seconds.values()))
    data["budget"] = plan.as_dict()
    settings = {
        **config.trust,
        "sanity_images": plan.images["sanity"],
        "faithfulness_images": plan.images["faithfulness"],
        "region_images": plan.images["region"],
    }
    if plan.reduced:
        log.info(
            "trust: images reduced to fit the %.0f s budget (%s)",
            plan.budget_seconds,
            ", ".join(f"{c} {plan.images[c]} of {plan.requested[c]}" for c in plan.images),
        )
    ns = settings["sanity_images"]
    data["sanity"] = _sanity(model, images[:ns], targets[:ns], layers, methods, batch, settings)
    lap("sanity")
    data["sanity_images"] = ns
    data["sanity_seeds"] = list(range(settings["sanity_seeds"]))
    data["sanity_rules"] = {
        "spearman": settings["sanity_spearman"],
        "ssim": settings["sanity_ssim"],
        "images": ns,
        "seeds": settings["sanity_seeds"],
        "bootstrap": settings["bootstrap"],
    }
    nf = min(settings["faithfulness_images"], n)
    data["faithfulness"] = _faithfulness(
        model,
        images[:nf],
        {m: maps[m][:nf] for m in methods},
        targets[:nf],
        methods,
        batch,
        config.seed,
    )
    # the end point of deletion: every pixel removed (a model still right here reads no detail)
    data["faithfulness"]["fully_removed"] = T.fully_removed(
        model,
        images[:nf],
        targets[:nf],
        labels[:nf],
        baselines=FAITHFULNESS_BASELINES,
        batch_size=max(64, batch),
    )

    lap("faithfulness")
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
        data["localization"] = _localization(
            {m: maps[m][have] for m in methods},
            {m: raw[m][have] for m in methods},
            masks[have],
            labels[have],
            names,
            methods,
        )

    lap("localization")
    data["shortcut"], rows, examples, pictures = _shortcuts(
        prep, config, settings, images, units, labels, raw, masks, have, region, dataset_idx, lap
    )
    data["shortcut_examples"] = examples
    data["shortcut_rules"] = {
        "basis": "mask" if masks is not None else "region",
        **{k: settings[k] for k in SHORTCUT_RULE_KEYS},
        "region_images": settings["region_images"],
        "bootstrap": settings["bootstrap"],
    }
    data["object_definition"] = OBJECT_DEFINITION if masks is not None else None
    data["agreement"] = T.agreement_summary(T.method_agreement(maps)) if len(methods) > 1 else None
    lap("agreement")
    result.section = data
    if rows:
        result.arrays = {
            "evidence_images": uint8_images(units[rows]),
            "evidence_maps": uint8_maps(maps[methods[0]][rows]),
        }
    if pictures:
        result.arrays["shortcut_examples"] = uint8_images(torch.stack(pictures))
    return result


def _source_fields(source: str) -> dict[str, str]:
    """``method`` and ``layer`` of a region candidate's source (``"gradcam@features.relu4"``;
    the pixel contrast has no method: ``"pixel contrast"`` at ``"input"``)."""
    if "@" in source:
        method, layer = source.split("@", 1)
        return {"method": method, "layer": layer}
    return {"method": source.replace("-", " "), "layer": "input"}


def _shortcuts(
    prep: Prepared,
    config: AuditConfig,
    settings: dict[str, Any],
    images: torch.Tensor,
    units: torch.Tensor,
    labels: torch.Tensor,
    raw: dict[str, torch.Tensor],
    masks: torch.Tensor | None,
    have: torch.Tensor,
    region: RegionInputs,
    dataset_idx: list[int],
    lap: Callable[[str], None] = lambda name: None,
) -> tuple[dict[str, Any], list[int], list[dict[str, Any]], list[torch.Tensor]]:
    """Per class: saliency statistics (candidates only) and the interventions that decide.

    With masks, each object is kept and its background replaced by another class's
    (:func:`~reporter.metrics.trust.background_swap`). With or without masks, each class's
    cue region is searched among the boxes proposed by every method and layer and by the pixel
    contrast, and pasted into other classes' images
    (:func:`~reporter.metrics.trust.search_region_cues`): it flags a watermark-like cue and
    says where a flagged class's cue is. Only an intervention flags a class.

    Returns:
        ``(shortcut section, evidence rows, shortcut example records, example images)``; the
        images are ``[3, H, W]`` in [0, 1], one per record.
    """
    model = prep.loaded.model
    names = list(prep.bundle.class_names)
    methods = list(config.methods)
    primary = methods[0]
    keep = have if masks is not None else torch.ones(len(images), dtype=torch.bool)
    kept = torch.nonzero(keep).flatten()
    # one object area everywhere: the mask itself, no outline margin; mass on the raw map
    scores = T.shortcut_scores(
        raw[primary][keep], labels[keep], names, masks[keep] if masks is not None else None
    )
    batch = config.batch_size
    fwd = max(64, batch)
    effects: dict[str, Any] = {}
    if masks is not None:
        effects = T.background_swap(
            model,
            images[keep],
            masks[keep],
            labels[keep],
            class_names=names,
            seed=config.seed,
            batch_size=fwd,
            n_boot=settings["bootstrap"],
            drop_threshold=settings["drop"],
            ci_lower_threshold=settings["drop_interval_lower"],
            change_threshold=settings["changed"],
            change_lower_threshold=settings["changed_interval_lower"],
            pull_threshold=settings["pull"],
            pull_lower_threshold=settings["pull_interval_lower"],
        )
    lap("shortcut_background_swap")
    search = _region_search(model, images, labels, region, names, batch, config.seed, settings)
    lap("shortcut_region_search")
    out: dict[str, Any] = {}
    rows: list[int] = []
    for cname, s in scores.items():
        swap = effects.get(cname)
        found = search.get(cname)
        cue = {**found.as_dict(), **_source_fields(found.source)} if found is not None else None
        by_swap = bool(swap is not None and swap.flagged)
        by_region = bool(found is not None and found.flagged)
        flagged = by_swap or by_region
        basis = "mask" if masks is not None and (by_swap or not by_region) else "region"
        effect = swap.as_dict() if basis == "mask" and swap is not None else cue
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
            "flagged_by": [
                k for k, v in (("background-swap", by_swap), ("region-paste", by_region)) if v
            ],
            "basis": basis,
            "method": primary,
            "intervention": effect,
            "region": cue,
            "cue_position": cue["position"] if by_region and cue is not None else None,
            "cue_box": cue["box"] if by_region and cue is not None else None,
            "settings": [
                {**_source_fields(c["source"]), **c} for c in (found.candidates if found else [])
            ],
            "saliency": saliency,
            "level": "flagged" if flagged else saliency.get("level", "none"),
            "evidence": evidence,
        }
    records, pictures = _shortcut_examples(
        model, images, units, labels, masks, keep, names, out, search, config.seed, fwd, settings
    )
    lap("shortcut_examples")
    return out, rows, records, pictures


def _shortcut_examples(
    model, images, units, labels, masks, keep, names, out, search, seed, fwd, settings
) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """The intervened images that the cue made the model get wrong (at most
    :data:`SHORTCUT_EXAMPLES`, spread over the flagged classes), the same edits made on the
    display images: a background swap that turned a right prediction wrong or pulled an image
    to the cue's class; a pasted region that flipped an image to the class; an ablated region
    that turned one of the class's right predictions wrong."""
    flagged = [c for c, v in out.items() if v["flagged"]]
    if not flagged:
        return [], []
    candidates: dict[str, list[tuple[dict[str, Any], torch.Tensor]]] = {c: [] for c in flagged}
    n_region = min(len(images), settings["region_images"])
    if masks is not None and any("background-swap" in out[c]["flagged_by"] for c in flagged):
        idx = torch.nonzero(keep).flatten()
        x, u, y, m = images[idx], units[idx], labels[idx], masks[idx]
        edited, donors = I.swapped_images(x, m, y, seed=seed)
        shown, _ = I.swapped_images(u, m, y, seed=seed)
        before = I._predict(model, x, fwd)
        after = I._predict(model, edited, fwd)
        for i in range(len(y)):
            true, d = int(y[i]), int(donors[i]) if donors is not None else -1
            for c in flagged:
                k = names.index(c)
                own = true == k and before[i] == k and after[i] != k  # lost with its background
                pulled = true != k and d == k and before[i] != k and after[i] == k
                if "background-swap" in out[c]["flagged_by"] and (own or pulled):
                    candidates[c].append(
                        (_example(c, true, before[i], after[i], "background-swap", names), shown[i])
                    )
    for c in flagged:
        found = search.get(c)
        if found is None or not found.flagged:
            continue
        k = names.index(c)
        box = tuple(found.cue.region.box)
        x, u, y = images[:n_region], units[:n_region], labels[:n_region]
        sel = y == k
        other = torch.nonzero(~sel).flatten()
        pasted = I.pasted_images(x[other], box, x[sel], seed + k)
        shown = I.pasted_images(u[other], box, u[sel], seed + k)
        before = I._predict(model, x[other], fwd)
        after = I._predict(model, pasted, fwd)
        for j in range(len(other)):
            if before[j] != k and after[j] == k:
                true = int(y[other[j]])
                candidates[c].append(
                    (_example(c, true, before[j], after[j], "region-paste", names), shown[j])
                )
        own = torch.nonzero(sel).flatten()
        ablated = I.fill_box(x[own], box)
        shown_own = I.fill_box(u[own], box)
        before = I._predict(model, x[own], fwd)
        after = I._predict(model, ablated, fwd)
        for j in range(len(own)):
            if before[j] == k and after[j] != k:
                candidates[c].append(
                    (_example(c, k, before[j], after[j], "region-ablate", names), shown_own[j])
                )
    for c in flagged:  # within a class, alternate the kinds of intervention
        kinds: dict[str, list[tuple[dict[str, Any], torch.Tensor]]] = {}
        for item in candidates[c]:
            kinds.setdefault(item[0]["kind"], []).append(item)
        mixed = [x for group in itertools.zip_longest(*kinds.values()) for x in group if x]
        candidates[c] = mixed
    # round-robin over the flagged classes, at most SHORTCUT_EXAMPLES in all
    records: list[dict[str, Any]] = []
    pictures: list[torch.Tensor] = []
    depth = 0
    while len(records) < SHORTCUT_EXAMPLES and any(len(v) > depth for v in candidates.values()):
        for c in flagged:
            if depth < len(candidates[c]) and len(records) < SHORTCUT_EXAMPLES:
                record, picture = candidates[c][depth]
                records.append(record)
                pictures.append(picture.clamp(0, 1))
        depth += 1
    return records, pictures


def _example(cname, true, before, after, kind, names) -> dict[str, Any]:
    return {
        "class": cname,
        "label": names[int(true)],
        "pred_before": names[int(before)],
        "pred_after": names[int(after)],
        "kind": kind,
    }


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
