"""The pictures of the report, drawn from a bundle: ``audit.json`` numbers and artifact arrays.

:func:`report_figures` returns the ``fig`` mapping the templates read (PNG data URIs, in the
same nesting as the audit sections). It runs no model, reads no dataset and computes no metric:
charts come from numbers in ``audit``, tiles and overlays from the arrays the stages stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from reporter.bundle import Artifacts
from reporter.errors import ReporterError
from reporter.explain.registry import method_title
from reporter.report import figures as fg

__all__ = ["cue_chart", "decision_evidence", "report_figures"]


def report_figures(audit: dict[str, Any], artifacts: Artifacts) -> dict[str, Any]:
    """Every figure of the report, as the templates' ``fig`` mapping."""
    cmap = (audit.get("config") or {}).get("colormap", "viridis")
    metrics = audit["metrics"]
    names = list(audit["dataset"]["classes"])
    figs: dict[str, Any] = {
        "confusion": fg.confusion_figure(metrics["confusion_matrix"], names),
        "confusion_wide": fg.confusion_is_wide(len(names)),
        "reliability": fg.reliability_figure(metrics["reliability"], metrics["ece"]),
        "confidence": _confidence(artifacts),
        "colorbar": fg.colorbar_uri(cmap),
        "decision": decision_evidence(audit, artifacts),
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


# ------------------------------------------------------------------ the decision page


def _cue_rows(audit: dict[str, Any]) -> tuple[list[tuple[str, float, float]], list[tuple]]:
    """The numbers of the page-1 shortcut chart, from ``audit.json`` only.

    Returns ``(accuracy, changed)``: ``accuracy`` rows ``(label, with the cue, without it)``
    (the known-shortcut check over all classes; without one, each flagged class's recall with
    its own and with other classes' backgrounds: on generated data the test images' own
    backgrounds need not carry the cue, so the check alone stands for it); ``changed`` rows
    ``(label, value, control or None, kind)`` for the flagged classes: the share of
    predictions the background swap changed (``kind`` ``"changed"``), or the share predicted
    as the class with its region pasted and with another class's region (``"pasted"``).
    """
    accuracy: list[tuple[str, float, float]] = []
    changed: list[tuple] = []
    check = (audit.get("dataset") or {}).get("shortcut_check")
    if check:
        accuracy.append(
            (
                "all classes (known cue)",
                check["accuracy_shortcut_kept"],
                check["accuracy_shortcut_absent"],
            )
        )
    for name, v in ((audit.get("trust") or {}).get("shortcut") or {}).items():
        e = v.get("intervention") if isinstance(v, dict) and v.get("flagged") else None
        if not isinstance(e, dict):
            continue
        if v.get("basis") == "mask" and e.get("accuracy_with") is not None:
            if not check:  # generated data: its test images need not carry the cue at all
                accuracy.append((name, e["accuracy_with"], e["accuracy_without"]))
            if e.get("changed") is not None:
                changed.append((name, e["changed"], None, "changed"))
        elif e.get("flip_rate") is not None:
            changed.append((name, e["flip_rate"], e.get("control_flip_rate"), "pasted"))
    return accuracy, changed


def _pct(x: float) -> str:
    """A share as the findings write it (``95.5%``, ``29%``)."""
    return f"{x:.0%}" if abs(x - round(x, 2)) < 1e-9 or x >= 0.995 or x < 0.1 else f"{x:.1%}"


def cue_chart(accuracy: list[tuple[str, float, float]], changed: list[tuple]) -> str | None:
    """Horizontal bars: accuracy with and without the cue (left), and what the intervention
    changed (right); None when there is nothing to draw."""
    panels = [p for p in (accuracy, changed) if p]
    if not panels:
        return None
    height = 0.5 + 0.32 * max(len(p) for p in panels)
    fig = Figure(figsize=(2.6 * len(panels), height + 0.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    i = 0
    if accuracy:
        ax = axes[i]
        i += 1
        y = np.arange(len(accuracy))
        ax.barh(y - 0.2, [r[1] for r in accuracy], 0.38, color=fg.ACCENT, label="cue present")
        ax.barh(y + 0.2, [r[2] for r in accuracy], 0.38, color=fg.WARN, label="cue removed")
        for k, r in enumerate(accuracy):
            ax.text(r[1] + 0.01, k - 0.2, _pct(r[1]), va="center", fontsize=7.5)
            ax.text(r[2] + 0.01, k + 0.2, _pct(r[2]), va="center", fontsize=7.5)
        ax.set_yticks(y, [r[0] for r in accuracy], fontsize=8)
        ax.set_title("Accuracy (recall)\nwith and without the cue", fontsize=8.5, color=fg.INK)
        ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  ncol=2)  # fmt: skip
    if changed:
        ax = axes[i]
        y = np.arange(len(changed))
        pasted = any(r[3] == "pasted" for r in changed)
        ax.barh(y - (0.2 if pasted else 0), [r[1] for r in changed], 0.38 if pasted else 0.6,
                color=fg.WARN, label="cue pasted" if pasted else None)  # fmt: skip
        for k, r in enumerate(changed):
            ax.text(r[1] + 0.01, k - (0.2 if pasted else 0), _pct(r[1]), va="center",
                    fontsize=7.5)  # fmt: skip
        if pasted:
            controls = [r[2] or 0.0 for r in changed]
            ax.barh(y + 0.2, controls, 0.38, color="#9aa5b1", label="another class's region")
            ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                      ncol=2)  # fmt: skip
        ax.set_yticks(y, [r[0] for r in changed], fontsize=8)
        ax.set_title(
            "Predicted as the class\nwhen its region is pasted"
            if pasted
            else "Predictions changed\nby swapping the background",
            fontsize=8.5,
            color=fg.INK,
        )
    for ax in axes:
        ax.set_xlim(0, 1.15)
        ax.set_xticks([0, 0.5, 1], ["0%", "50%", "100%"])
        ax.invert_yaxis()
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(labelsize=8, colors=fg.INK)
    fig.tight_layout()
    return fg.figure_uri(fig)


def decision_evidence(audit: dict[str, Any], artifacts: Artifacts) -> dict[str, Any]:
    """The strongest evidence for page 1: the shortcut chart (``cue_chart``, None when no
    shortcut was found) and the strip of images the cue made the model get wrong
    (``examples``: ``{"image", "class", "label", "pred_before", "pred_after", "kind"}``, from
    ``trust.shortcut_examples`` and the ``trust/shortcut_examples`` array; empty when absent or
    when no shortcut was found)."""
    accuracy, changed = _cue_rows(audit)
    found = bool(changed) or any(
        f.get("id") in ("shortcut-known-background", "shortcut-intervention")
        for f in audit.get("findings") or []
        if isinstance(f, dict)
    )
    out: dict[str, Any] = {"cue_chart": cue_chart(accuracy, changed) if found else None}
    # the strip is evidence for a shortcut that was found: a clean model's page stays calm
    records = ((audit.get("trust") or {}).get("shortcut_examples") or []) if found else []
    images = artifacts.get("trust", "shortcut_examples") if records else None
    examples = []
    if images is not None and images.ndim == 4 and len(images) >= len(records):
        for k, rec in enumerate(records):
            examples.append(
                {**rec, "image": fg.tile_uri(fg.to_uint8_image(images[k]), min_side=72)}
            )
    out["examples"] = examples
    return out
