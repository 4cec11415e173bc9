"""The pictures of the report, drawn from a bundle: ``audit.json`` numbers and artifact arrays.

:func:`report_figures` returns the ``fig`` mapping the templates read (PNG data URIs, in the
same nesting as the audit sections). It runs no model, reads no dataset and computes no metric:
charts come from numbers in ``audit``, tiles and overlays from the arrays the stages stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reporter.bundle import Artifacts
from reporter.errors import ReporterError
from reporter.explain.registry import method_title
from reporter.report import figures as fg

__all__ = ["report_figures"]


def report_figures(audit: dict[str, Any], artifacts: Artifacts) -> dict[str, Any]:
    """Every figure of the report, as the templates' ``fig`` mapping."""
    cmap = (audit.get("config") or {}).get("colormap", "viridis")
    metrics = audit["metrics"]
    names = list(audit["dataset"]["classes"])
    figs: dict[str, Any] = {
        "confusion": fg.confusion_figure(metrics["confusion_matrix"], names),
        "reliability": fg.reliability_figure(metrics["reliability"], metrics["ece"]),
        "confidence": _confidence(artifacts),
        "colorbar": fg.colorbar_uri(cmap),
    }
    expl = audit.get("explanations") or {}
    if expl.get("methods"):
        figs["gallery"] = _galleries(expl.get("galleries") or {}, artifacts, cmap)
        figs["class_average"] = _class_averages(
            expl.get("class_average") or {}, names, artifacts, cmap
        )
        figs["featvis"] = _featvis(audit.get("featvis") or {}, artifacts)
        figs["trust"] = _trust(audit.get("trust") or {}, artifacts, cmap)
    return figs


def _confidence(artifacts: Artifacts) -> str:
    conf = artifacts.get("records", "confidence")
    label = artifacts.get("records", "label")
    pred = artifacts.get("records", "pred")
    if conf is None or label is None or pred is None:
        return fg.confidence_histogram(np.zeros(0), np.zeros(0))
    finite = artifacts.get("records", "finite")
    keep = finite if finite is not None else np.ones(len(conf), bool)
    right = (pred == label) & keep
    return fg.confidence_histogram(conf[right], conf[~right & keep])


def _galleries(section: dict[str, Any], artifacts: Artifacts, cmap: str) -> dict[str, Any]:
    images = artifacts.get("galleries", "images")
    maps = artifacts.get("galleries", "maps")
    methods = section.get("methods") or []
    out: dict[str, Any] = {"classes": {}}
    classes = section.get("classes") or {}
    if not classes:
        return out
    if images is None or maps is None:
        raise ReporterError(
            "The bundle's audit.json lists gallery images but its artifacts have no "
            "galleries/images or galleries/maps arrays. The bundle is damaged; run the audit again."
        )
    true_maps = artifacts.get("galleries", "true_maps")
    for cname, groups in classes.items():
        out["classes"][cname] = {}
        for kind, items in groups.items():
            tiles = []
            for item in items:
                r = item["row"]
                tile: dict[str, Any] = {"original": fg.tile_uri(images[r]), "overlays": {}}
                for mi, m in enumerate(methods):
                    tile["overlays"][m] = (
                        None
                        if m in item["flagged_methods"]
                        else fg.tile_uri(fg.overlay(images[r], maps[mi, r], cmap))
                    )
                t = item.get("true_row")
                if t is not None and true_maps is not None:  # the true class's map
                    tile["true_overlays"] = {
                        m: fg.tile_uri(fg.overlay(images[r], true_maps[mi, t], cmap))
                        for mi, m in enumerate(methods)
                    }
                tiles.append(tile)
            out["classes"][cname][kind] = tiles
    return out


def _class_averages(
    section: dict[str, Any], names: list[str], artifacts: Artifacts, cmap: str
) -> dict[str, Any]:
    images = artifacts.get("class_average", "images")
    maps = artifacts.get("class_average", "maps")
    counts = artifacts.get("class_average", "counts")
    if images is None or maps is None or counts is None:
        return {}
    out: dict[str, Any] = {}
    for mi, m in enumerate(section.get("methods") or []):
        out[m] = {}
        for li, layer in enumerate(section.get("layers") or []):
            out[m][layer] = {
                cname: (
                    fg.tile_uri(fg.overlay(images[c], maps[mi, li, c], cmap), min_side=96)
                    if counts[c] > 0
                    else None
                )
                for c, cname in enumerate(names)
            }
    return out


def _featvis(section: dict[str, Any], artifacts: Artifacts) -> dict[str, Any]:
    arrays = artifacts.group("featvis")
    out: dict[str, Any] = {"layers": {}, "filters": None, "activation_maps": None}
    if section.get("filters"):
        out["filters"] = fg.tile_uri(arrays[section["filters"]["array"]], min_side=160)
    for layer, info in (section.get("layers") or {}).items():
        channels = {}
        for ch, c in info["channels"].items():
            key, i = c["render"]
            channels[ch] = {
                "render": fg.tile_uri(arrays[key][i], min_side=96),
                "examples": [
                    fg.tile_uri(arrays[e["array"]], min_side=64) for e in c["top_examples"]
                ],
            }
        out["layers"][layer] = {"channels": channels}
    panel = section.get("activation_maps")
    if panel:
        out["activation_maps"] = {
            "image": fg.tile_uri(arrays["actmap_image"]),
            "layers": {
                name: fg.tile_uri(arrays[f"actmap_{j}"], min_side=48)
                for j, name in enumerate(panel["layers"])
            },
        }
    return out


def _trust(section: dict[str, Any], artifacts: Artifacts, cmap: str) -> dict[str, Any]:
    if not section:
        return {}
    out: dict[str, Any] = {}
    sanity = section.get("sanity") or {}
    if sanity:
        out["sanity"] = fg.curves_figure(
            {
                method_title(m): [1.0, *(x for x in v["cascade"].values() if x is not None)]
                for m, v in sanity.items()
            },
            xlabel="share of the network randomized (output first)",
            ylabel="rank correlation with trained maps",
            title="Randomization test",
        )
    faithfulness = section.get("faithfulness") or {}
    faith = faithfulness.get("methods") or {}
    if faith:
        base = (faithfulness.get("baselines") or ["blur"])[0]
        curves = {m: f["baselines"][base] for m, f in faith.items()}
        out["deletion"] = fg.curves_figure(
            {method_title(m): c["deletion_curve"] for m, c in curves.items()},
            xlabel="share of pixels removed",
            ylabel="class probability",
            title=f"Deletion, {base} baseline (lower is better)",
        )
        out["insertion"] = fg.curves_figure(
            {method_title(m): c["insertion_curve"] for m, c in curves.items()},
            xlabel="share of pixels inserted",
            ylabel="class probability",
            title=f"Insertion, {base} baseline (higher is better)",
        )
    images = artifacts.get("trust", "evidence_images")
    maps = artifacts.get("trust", "evidence_maps")
    evidence: dict[str, list[str]] = {}
    for cname, s in (section.get("shortcut") or {}).items():
        rows = [e["row"] for e in s.get("evidence") or [] if "row" in e]
        if rows and images is not None and maps is not None:
            evidence[cname] = [fg.tile_uri(fg.overlay(images[r], maps[r], cmap)) for r in rows]
    out["shortcut_evidence"] = evidence
    return out
