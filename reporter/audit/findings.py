"""The findings stage: ranked records, each a sentence generated from numbers in ``audit.json``.

A finding is ``{"id", "severity", "statement", "numbers", "evidence", "recommendation"}``:
``id`` a stable slug (the same rule gives the same id in every audit), ``severity`` one of
:data:`SEVERITIES`, ``statement`` one or two sentences, ``numbers`` the values the statement
rests on (copied from ``audit.json``), ``evidence`` ``{"anchor", "label"}`` naming the figure
or table of the report that shows it (``anchor`` is an ``id`` in ``report.html``), and
``recommendation`` what to do next. :func:`key_findings` returns them most severe first
(stable within a severity).

Every sentence is a function of values in the audit context only (never of arrays, the model
or the data), so the cover page can never say something the data does not, and the same
sentences come back when a bundle is rendered again. The shortcut sentences are written here
and nowhere else. Thresholds that decide a severity come from the ``[verdict]`` rules
(:data:`reporter.config.VERDICT_FIELDS`), the same ones the verdict uses.
"""

from __future__ import annotations

from typing import Any

from reporter.audit.trust_findings import (
    borderline_sanity_findings,
    budget_findings,
    cue_location_findings,
    fully_removed_findings,
)
from reporter.config import VERDICT_FIELDS
from reporter.explain.registry import method_title

__all__ = [
    "SEVERITIES",
    "finding",
    "fully_removed_finding",
    "key_findings",
    "percent",
    "rank",
    "shortcut_sentence",
    "verdict_rules",
]

SEVERITIES = ("high", "medium", "low", "info")
"""Severity levels, most severe first."""


def verdict_rules(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict and severity thresholds: the defaults of ``[verdict]``
    (:data:`reporter.config.VERDICT_FIELDS`) with ``overrides`` applied."""
    rules = {k: spec.default for k, spec in VERDICT_FIELDS.items()}
    rules.update(overrides or {})
    return rules


def finding(
    id: str,
    severity: str,
    statement: str,
    *,
    numbers: dict[str, Any],
    anchor: str,
    label: str,
    recommendation: str,
) -> dict[str, Any]:
    """One finding record (see the module docstring)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not one of {SEVERITIES}")
    return {
        "id": id,
        "severity": severity,
        "statement": statement,
        "numbers": numbers,
        "evidence": {"anchor": anchor, "label": label},
        "recommendation": recommendation,
    }


def rank(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings most severe first; the order within a severity is kept."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f["severity"]))


def percent(x: float) -> str:
    """A fraction as the report writes it (``95.5%``, ``29%``, ``100%``)."""
    return _pct(x)


def _pct(x: float) -> str:
    return f"{x:.0%}" if abs(x - round(x, 2)) < 1e-9 or x >= 0.995 or x < 0.1 else f"{x:.1%}"


def _names(items: list[str]) -> str:
    quoted = [f"“{s}”" for s in items]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _shortcut_clause(name: str, v: dict[str, Any]) -> str:
    """What the intervention on class ``name`` showed, from ``trust.shortcut[name]``."""
    e = v.get("intervention") or {}
    if v.get("basis") == "mask" and e.get("pulls"):
        return (
            f"“{name}”: its backgrounds, put behind the objects of other classes, make the model "
            f"predict “{name}” for {_pct(e['pull'])} of them ({_pct(e['pull_before'])} before; "
            f"n = {e['pull_n']})"
        )
    if v.get("basis") == "mask":
        lo, hi = (e.get("interval") or [None, None])[:2]
        interval = f", drop 95% interval {lo:.2f}–{hi:.2f}" if lo is not None else ""
        return (
            f"“{name}”: with its objects kept and other classes' backgrounds put behind them, "
            f"recall goes from {_pct(e['accuracy_with'])} to {_pct(e['accuracy_without'])} and "
            f"{_pct(e.get('changed') or 0.0)} of its predictions change (n = {e['n']}{interval})"
        )
    paste = e.get("paste") or {}
    control = e.get("control_flip_rate")
    title = method_title(e.get("method", v.get("method", "")))
    return (
        f"“{name}”: pasting its most salient region ({e.get('position', 'a small region')}, "
        f"{_pct(e.get('area_fraction') or 0.0)} of the image) into {paste.get('n', 'the')} images "
        f"of other classes makes the model predict “{name}” for {_pct(e['flip_rate'])} of them"
        + (f" ({_pct(control)} with a region from another class)" if control is not None else "")
        + f"; found with {title} at layer {e.get('layer', '?')}"
    )


def shortcut_sentence(flagged: list[tuple[str, dict[str, Any]]], total: int) -> str:
    """One sentence for the classes an intervention flagged as shortcuts (``(name, entry)``
    pairs from ``trust.shortcut``), out of ``total`` classes checked."""
    mask = all(v.get("basis") == "mask" for _, v in flagged)
    what = (
        "the model relies on the background or context rather than the object"
        if mask
        else "a small region, not the object, gives the class away (a watermark-like cue)"
    )
    if len(flagged) == 1:
        name, v = flagged[0]
        return f"Shortcut for class {_shortcut_clause(name, v)}: {what}."
    names = _names([n for n, _ in flagged])
    effects = [v.get("intervention") or {} for _, v in flagged]
    sizes = [e.get("n", 0) for e in effects]
    n_text = (
        f"n = {min(sizes)}–{max(sizes)} per class"
        if min(sizes) != max(sizes)
        else (f"n = {sizes[0]} per class")
    )
    if mask:
        changed = [e.get("changed") or 0.0 for e in effects]
        drops = [e.get("drop") or 0.0 for e in effects]
        return (
            f"Shortcut for {len(flagged)} of {total} classes ({names}): with the objects kept and "
            f"other classes' backgrounds put behind them, {_span(changed)} of their predictions "
            f"change and recall moves by {_span(drops, signed=True)} ({n_text}); {what}."
        )
    flips = [e.get("flip_rate") or 0.0 for e in effects]
    return (
        f"Shortcut for {len(flagged)} of {total} classes ({names}): pasting each class's most "
        f"salient small region into other classes' images makes the model predict that class "
        f"for {_span(flips)} of them ({n_text}); {what}."
    )


def _span(values: list[float], *, signed: bool = False) -> str:
    """``12%–40%`` (or one value), from fractions; ``signed`` writes drops as ``-12 to +40
    points``."""
    lo, hi = min(values), max(values)
    if signed:
        lo_p, hi_p = round(-hi * 100), round(-lo * 100)
        return f"{lo_p:+d} to {hi_p:+d} points" if lo_p != hi_p else f"{lo_p:+d} points"
    return _pct(lo) if round(lo, 2) == round(hi, 2) else f"{lo:.0%}–{hi:.0%}"


def _no_shortcut_sentence(shortcut: dict[str, Any]) -> str | None:
    """What the intervention found when it flagged no class, with its largest effect."""
    effects: list[dict[str, Any]] = [
        v["intervention"]
        for v in shortcut.values()
        if isinstance(v, dict) and isinstance(v.get("intervention"), dict)
    ]
    if not effects:
        return None
    sizes = [e.get("n", 0) for e in effects]
    n_text = (
        f"n = {min(sizes)}–{max(sizes)} per class"
        if min(sizes) != max(sizes)
        else (f"n = {sizes[0]} per class")
    )
    if all(v.get("basis") == "mask" for v in shortcut.values() if isinstance(v, dict)):
        worst = max(e.get("changed") or 0.0 for e in effects)
        return (
            f"No class relies on its background: with other classes' backgrounds put behind the "
            f"objects, at most {_pct(worst)} of a class's predictions change ({n_text})."
        )
    flips = [
        (e.get("flip_rate") or 0.0) - (e.get("control_flip_rate") or 0.0)
        for e in effects
        if e.get("flip_rate") is not None
    ]
    if not flips:
        return None
    return (
        f"No small region gives a class away: pasting each class's most salient region into "
        f"other classes' images changes at most {_pct(max(0.0, max(flips)))} more predictions "
        f"to that class than a region from another class does ({n_text}); checked without "
        "object masks."
    )


_SANITY_WORDS = {
    "failed": "failed the randomization test",
    "inconclusive": "was inconclusive in the randomization test",
}


def _sanity_sentence(method: str, v: dict[str, Any]) -> str:
    lo, hi = (v.get("interval") or [None, None])[:2]
    n_seeds = v.get("n_seeds") or 0
    text = f"{method_title(method)} on layer {v.get('layer', '?')} {_SANITY_WORDS[v['status']]}"
    if v.get("spearman") is not None:
        text += (
            f": with the weights randomized ({n_seeds} seeds"
            + (f", n = {v['n_images']} images" if v.get("n_images") else "")
            + f"), its maps keep a rank correlation of {v['spearman']:.2f}"
        )
        if lo is not None:
            text += f" (95% interval {lo:.2f}–{hi:.2f})"
        text += " with the trained model's"
        if v.get("floor_spearman") is not None:
            text += f"; two random networks agree {v['floor_spearman']:.2f} with each other"
    meaning = (v.get("meaning") or "").strip()
    return text + (f". {meaning[0].upper()}{meaning[1:]}" if meaning else ".")


def key_findings(
    audit: dict[str, Any], rules: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The findings of an ``audit.json``, most severe first (see the module docstring).

    Args:
        audit: The audit context (``findings`` and ``verdict`` are not read).
        rules: The ``[verdict]`` thresholds (:func:`verdict_rules`); the defaults when None.

    Returns:
        Finding records ranked by severity; within a severity: shortcuts, a model with no
        usable output, trust problems (they change how everything else must be read),
        performance, explanation statistics and data problems.
    """
    rules = verdict_rules(rules)
    expl = audit.get("explanations") or {}
    unavailable = []
    if not expl.get("methods") and expl.get("unavailable"):
        unavailable.append(
            finding(
                "explanations-unavailable",
                "low",
                str(expl["unavailable"]),
                numbers={},
                anchor="appendix",
                label="Appendix",
                recommendation="Audit the original nn.Module to get saliency maps and trust "
                "checks.",
            )
        )
    found = (
        _shortcut_check(audit, rules)
        + _shortcut_intervention(audit)
        + _cue_locations(audit)
        + _integrity(audit)
        + _sanity(audit)
        + _borderline_layers(audit)
        + _faithfulness(audit)
        + _fully_removed(audit)
        + _localization(audit)
        + _performance(audit, rules)
        + _explanations(audit)
        + _data(audit)
        + budget_findings(audit)
        + unavailable
    )
    return rank(found)


def _integrity(audit: dict[str, Any]) -> list[dict[str, Any]]:
    m = audit["metrics"]
    n = m["n_images"]
    if not m.get("all_outputs_nonfinite"):
        return []
    # nothing else the report says about this model means anything
    return [
        finding(
            "no-usable-output",
            "high",
            f"The model produced no usable output: all {n} of its outputs hold NaN or infinite "
            "values. No metric, map or check of this report can be read; fix the model or its "
            "checkpoint first.",
            numbers={"n_images": n, "nonfinite_outputs": m.get("nonfinite_outputs", n)},
            anchor="performance",
            label="Performance",
            recommendation="Check the checkpoint and the preprocessing (input scaling), then "
            "audit again.",
        )
    ]


_SHORTCUT_ADVICE = (
    "Do not deploy where the background (or the cue) may differ from training; retrain with "
    "the cue decorrelated from the class (more varied or swapped backgrounds, masking, "
    "augmentation) and audit again."
)


def _shortcut_intervention(audit: dict[str, Any]) -> list[dict[str, Any]]:
    trust = audit.get("trust") or {}
    shortcut = trust.get("shortcut") or {}
    flagged = [(n, v) for n, v in shortcut.items() if isinstance(v, dict) and v.get("flagged")]
    effects = [
        v["intervention"]
        for _, v in (flagged or list(shortcut.items()))
        if isinstance(v, dict) and isinstance(v.get("intervention"), dict)
    ]
    numbers: dict[str, Any] = {
        "flagged_classes": len(flagged),
        "classes": len(shortcut),
        "n_per_class": [e.get("n") for e in effects],
    }
    if flagged:
        if all(v.get("basis") == "mask" for _, v in flagged):
            numbers["changed"] = [e.get("changed") for e in effects]
            numbers["drop"] = [e.get("drop") for e in effects]
        else:
            numbers["flip_rate"] = [e.get("flip_rate") for e in effects]
        numbers["flagged"] = [n for n, _ in flagged]
        return [
            finding(
                "shortcut-intervention",
                "high",
                shortcut_sentence(flagged, len(shortcut)),
                numbers=numbers,
                anchor="trust-shortcut",
                label="Shortcut detection table",
                recommendation=_SHORTCUT_ADVICE,
            )
        ]
    clear = _no_shortcut_sentence(shortcut) if shortcut else None
    if not clear:
        return []
    return [
        finding(
            "no-shortcut-found",
            "info",
            clear,
            numbers=numbers,
            anchor="trust-shortcut",
            label="Shortcut detection table",
            recommendation="None needed; the check covers the cues it tests (backgrounds with "
            "masks, small pasted regions without), not every possible shortcut.",
        )
    ]


def _sanity(audit: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    sanity = (audit.get("trust") or {}).get("sanity") or {}
    for status, severity in (("failed", "medium"), ("inconclusive", "low")):
        for method, v in sanity.items():
            if not (isinstance(v, dict) and v.get("status") == status):
                continue
            title = method_title(method)
            out.append(
                finding(
                    f"sanity-{status}-{method}",
                    severity,
                    _sanity_sentence(method, v),
                    numbers={
                        "spearman": v.get("spearman"),
                        "interval": v.get("interval"),
                        "floor_spearman": v.get("floor_spearman"),
                        "threshold": (v.get("thresholds") or {}).get("spearman"),
                        "n_images": v.get("n_images"),
                        "n_seeds": v.get("n_seeds"),
                    },
                    anchor="trust-sanity",
                    label="Randomization test table",
                    recommendation=(
                        f"Read {title} maps as where the object is, not as why the model "
                        "decided; base conclusions on a method that passed."
                        if status == "failed"
                        else f"Treat {title} maps with care; more sanity images or seeds "
                        "(--trust-samples) can settle the test."
                    ),
                )
            )
    reconcile = _reconcile(audit)
    if reconcile:
        out.append(reconcile)
    return out


def _blur(f: dict[str, Any], baselines: list[str]) -> dict[str, Any] | None:
    base = (baselines or ["blur"])[0]
    return (f.get("baselines") or {}).get(base)


def _reconcile(audit: dict[str, Any]) -> dict[str, Any] | None:
    """One sentence when a method that failed the randomization test scores better on deletion
    or insertion than a method that passed it (the two tests seem to disagree)."""
    trust = audit.get("trust") or {}
    sanity = trust.get("sanity") or {}
    faith = trust.get("faithfulness") or {}
    methods = faith.get("methods") or {}
    baselines = faith.get("baselines") or ["blur"]
    scores: dict[str, dict[str, Any]] = {}
    for m, f in methods.items():
        r = _blur(f, baselines)
        if r:
            scores[m] = r
    passed = [m for m, v in sanity.items() if isinstance(v, dict) and v.get("status") == "passed"]
    failed = [m for m, v in sanity.items() if isinstance(v, dict) and v.get("status") == "failed"]
    passed = [m for m in passed if scores.get(m)]
    failed = [m for m in failed if scores.get(m)]
    if not passed or not failed:
        return None
    best_pass_ins = max(scores[m]["insertion_auc"] for m in passed)
    best_pass_del = min(scores[m]["deletion_auc"] for m in passed)
    better = [
        m
        for m in failed
        if scores[m]["insertion_auc"] > best_pass_ins or scores[m]["deletion_auc"] < best_pass_del
    ]
    if not better:
        return None
    titles = [method_title(m) for m in better]
    pass_titles = [method_title(m) for m in passed]
    base = baselines[0]
    return finding(
        "sanity-faithfulness-disagree",
        "info",
        f"{' and '.join(titles)} failed the randomization test yet score"
        f"{'s' if len(better) == 1 else ''} better on deletion or insertion ({base} baseline, "
        f"n = {faith.get('images', '?')} images) than {' and '.join(pass_titles)}, which passed: "
        "the two tests ask different questions. A map that marks the object can move the score "
        "when the object drives the decision, without depending on what the model learned; "
        "only a method that passes both shows why this model decided.",
        numbers={
            "failed_methods": better,
            "passed_methods": passed,
            "insertion_auc": {m: scores[m]["insertion_auc"] for m in better + passed},
            "deletion_auc": {m: scores[m]["deletion_auc"] for m in better + passed},
        },
        anchor="trust-faithfulness",
        label="Deletion and insertion table",
        recommendation=f"Prefer {' or '.join(pass_titles)} to explain individual decisions.",
    )


def _faithfulness(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """Each method's deletion and insertion areas against the random-map reference, in words."""
    faith = (audit.get("trust") or {}).get("faithfulness") or {}
    methods = faith.get("methods") or {}
    baselines = faith.get("baselines") or ["blur"]
    rows: dict[str, dict[str, Any]] = {}
    for m, f in methods.items():
        r = _blur(f, baselines)
        if r and r.get("random_deletion_auc") is not None:
            rows[m] = r
    if not rows:
        return []
    both: list[str] = []
    neither: list[str] = []
    partly: list[str] = []
    for m, r in rows.items():
        del_better = r["deletion_auc"] < r["random_deletion_auc"]
        ins_better = r["insertion_auc"] > r["random_insertion_auc"]
        (
            both if del_better and ins_better else partly if del_better or ins_better else neither
        ).append(m)
    parts = []
    if both:
        parts.append(
            f"{_and([method_title(m) for m in both])} beat{'s' if len(both) == 1 else ''} random "
            "maps on both (the class probability falls faster when its salient pixels are "
            "removed and rises faster when they are inserted)"
        )
    if partly:
        parts.append(
            f"{_and([method_title(m) for m in partly])} beat{'s' if len(partly) == 1 else ''} "
            "random maps on only one of the two"
        )
    if neither:
        parts.append(
            f"{_and([method_title(m) for m in neither])} "
            f"do{'es' if len(neither) == 1 else ''} no better than random maps: "
            f"{'its' if len(neither) == 1 else 'their'} ranking of pixels says nothing about "
            "what drives the score"
        )
    base = baselines[0]
    statement = (
        f"Deletion and insertion ({base} baseline, n = {faith.get('images', '?')} images), "
        "compared with random maps: " + "; ".join(parts) + "."
    )
    return [
        finding(
            "faithfulness-vs-random",
            "low" if neither else "info",
            statement,
            numbers={
                m: {
                    k: r[k]
                    for k in (
                        "deletion_auc",
                        "random_deletion_auc",
                        "insertion_auc",
                        "random_insertion_auc",
                    )
                }
                for m, r in rows.items()
            },
            anchor="trust-faithfulness",
            label="Deletion and insertion table",
            recommendation=(
                f"Do not read {_and([method_title(m) for m in neither])} maps as what drives the "
                "score."
                if neither
                else "None needed."
            ),
        )
    ]


def fully_removed_finding(
    confidence: float,
    n: int,
    num_classes: int,
    baseline: str = "blur",
    intact: float | None = None,
) -> dict[str, Any]:
    """What the model does with images whose every pixel was removed (``baseline``: blurred or
    set to the mean colour): the mean probability ``confidence`` of the class it predicted on
    the intact image (mean ``intact`` there, when known), over ``n`` images, against chance
    ``1 / num_classes``.

    The removal barely matters to the model when ``confidence`` is more than twice chance and,
    with ``intact`` known, at least :data:`FULLY_REMOVED_KEPT` of it (else above 0.5): it
    decides from what survives the removal (colour, layout, background), not from the object's
    shape, itself evidence of a shortcut (``medium``); otherwise ``info``.
    """
    chance = 1.0 / max(1, num_classes)
    removed = "blurred" if baseline == "blur" else "replaced by the mean colour"
    kept = confidence >= FULLY_REMOVED_KEPT * intact if intact else confidence > 0.5
    high = kept and confidence > 2 * chance
    tail = (
        ": the removal barely matters to it, so it decides from what survives (colour, layout, "
        "background), not from the object's shape — itself evidence of a shortcut."
        if high
        else ", close to what it gives with nothing to see."
        if confidence <= 2 * chance
        else "."
    )
    on_intact = f"{_pct(intact)} on the intact images; " if intact else ""
    return finding(
        "fully-removed-confidence",
        "medium" if high else "info",
        f"With every pixel {removed} (n = {n} images), the model still gives the class it "
        f"predicted on the intact image a mean probability of {_pct(confidence)} ({on_intact}"
        f"chance: {_pct(chance)}){tail}",
        numbers={
            "confidence": confidence,
            "intact": intact,
            "n": n,
            "chance": chance,
            "baseline": baseline,
        },
        anchor="trust-faithfulness",
        label="Deletion curves",
        recommendation=(
            "Check what the blurred image still shows (colour, background) and retrain with "
            "that cue decorrelated from the class."
            if high
            else "None needed."
        ),
    )


FULLY_REMOVED_KEPT = 0.9
"""Share of the intact images' probability that a fully removed image must keep for
:func:`fully_removed_finding` to call the removal irrelevant to the model."""


def _cue_locations(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the cue of a class flagged by the background swap sits (the region search located
    it); a class flagged by the region paste already names its region in its own finding."""
    shortcut = (audit.get("trust") or {}).get("shortcut") or {}
    return [
        f
        for f in cue_location_findings(audit)
        if (shortcut.get(f["id"].removeprefix("trust-cue-")) or {}).get("basis") == "mask"
    ]


def _borderline_layers(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """Layers whose randomization test is borderline, for methods that passed overall (a
    method that failed or is inconclusive has its own finding)."""
    sanity = (audit.get("trust") or {}).get("sanity") or {}
    passed = {m for m, v in sanity.items() if isinstance(v, dict) and v.get("status") == "passed"}
    return [
        f
        for f in borderline_sanity_findings(audit)
        if any(f["id"].startswith(f"trust-sanity-borderline-{m}-") for m in passed)
    ]


def _fully_removed(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """What the model does with fully removed images. With ``trust.faithfulness.fully_removed``
    (accuracy on fully blurred images, with an interval) the rule of
    :func:`reporter.audit.trust_findings.fully_removed_findings`; in older bundles the last
    point of the deletion curve (every pixel blurred) against its first (intact), only when the
    removal barely matters (a ``medium`` finding)."""
    faith = (audit.get("trust") or {}).get("faithfulness") or {}
    if faith.get("fully_removed"):
        return fully_removed_findings(audit)
    methods = faith.get("methods") or {}
    if not methods or "blur" not in (faith.get("baselines") or []):
        return []
    curve = (next(iter(methods.values())).get("baselines") or {}).get("blur", {})
    curve = curve.get("deletion_curve") or []
    names = (audit.get("dataset") or {}).get("classes") or []
    if len(curve) < 2 or not names or curve[0] is None or curve[-1] is None:
        return []
    found = fully_removed_finding(
        curve[-1], faith.get("images", 0), len(names), "blur", intact=curve[0]
    )
    return [found] if found["severity"] == "medium" else []


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _localization(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """Where each class's saliency lies against the object masks: the classes with most of it
    outside the object, named with how much (or that none has)."""
    loc = (audit.get("trust") or {}).get("localization") or {}
    methods = loc.get("methods") or {}
    if not methods:
        return []
    border = (audit.get("explanations") or {}).get("border_summary") or {}
    method = str(border["method"]) if border.get("method") in methods else next(iter(methods))
    per_class = methods[method].get("energy_per_class") or {}
    if not per_class:
        return []
    title = method_title(method)
    outside = {c: 1.0 - v for c, v in per_class.items() if v is not None}
    off = sorted((c for c, v in outside.items() if v > 0.5), key=lambda c: -outside[c])
    n_img = loc.get("images", "?")
    area = loc.get("object_area")
    area_text = f"; objects cover {_pct(area)} of the image" if area is not None else ""
    numbers = {"method": method, "outside": outside, "n_images": n_img, "object_area": area}
    if off:
        named = _names_with(off, outside)
        return [
            finding(
                "saliency-off-object",
                "low",
                f"For {len(off)} of {len(outside)} classes most of the {title} saliency lies "
                f"outside the object mask: {named} of it (n = {n_img} images{area_text}).",
                numbers=numbers,
                anchor="trust-localization",
                label="Localization table",
                recommendation="Look at these classes' galleries and the shortcut check before "
                "trusting their maps or the model on them.",
            )
        ]
    lowest = max(outside, key=lambda c: outside[c])
    return [
        finding(
            "saliency-on-object",
            "info",
            f"For every class most of the {title} saliency lies on the object (at most "
            f"{_pct(outside[lowest])} outside, for “{lowest}”; n = {n_img} images{area_text}).",
            numbers=numbers,
            anchor="trust-localization",
            label="Localization table",
            recommendation="None needed.",
        )
    ]


def _names_with(classes: list[str], values: dict[str, float]) -> str:
    parts = [f"“{c}” {_pct(values[c])}" for c in classes]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _shortcut_check(audit: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, Any]]:
    """The intervention on generated data with a known background shortcut."""
    check = (audit.get("dataset") or {}).get("shortcut_check")
    if not check:
        return []
    kept, absent = check["accuracy_shortcut_kept"], check["accuracy_shortcut_absent"]
    numbers = {
        "accuracy_shortcut_kept": kept,
        "accuracy_shortcut_absent": absent,
        "drop": kept - absent,
        "threshold": rules["shortcut_accuracy_drop"],
        "spurious": check.get("spurious"),
    }
    n = check.get("n")
    n_text = f" (n = {n} images each)" if n else ""
    if kept - absent > rules["shortcut_accuracy_drop"]:
        return [
            finding(
                "shortcut-known-background",
                "high",
                f"The model relies on the background: its accuracy is {_pct(kept)} when the "
                f"background colour matches the class, as it did in training, and "
                f"{_pct(absent)} when it does not{n_text}.",
                numbers=numbers,
                anchor="trust-shortcut",
                label="Shortcut detection",
                recommendation=_SHORTCUT_ADVICE,
            )
        ]
    return [
        finding(
            "no-known-background-shortcut",
            "info",
            f"The background does not carry the decision: accuracy is {_pct(kept)} with "
            f"the training background shortcut and {_pct(absent)} without it{n_text}.",
            numbers=numbers,
            anchor="trust-shortcut",
            label="Shortcut detection",
            recommendation="None needed.",
        )
    ]


def weak_classes(audit: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-class rows of ``metrics.per_class`` that are *weak*: recall below
    ``rules["weak_class_recall"]`` with at least ``rules["weak_class_min_images"]`` test
    images, lowest recall first."""
    rows = [
        r
        for r in (audit.get("metrics") or {}).get("per_class") or []
        if r["support"] >= rules["weak_class_min_images"]
        and r["recall"] < rules["weak_class_recall"]
    ]
    return sorted(rows, key=lambda r: (r["recall"], r["class"]))


def _performance(audit: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    m = audit["metrics"]
    n = m["n_images"]
    names = [row["class"] for row in m["per_class"]]
    train = m.get("train_accuracy")
    train_n = ((audit.get("model") or {}).get("training") or {}).get("images")
    text = (
        f"The model classifies {_pct(m['accuracy'])} of the {n} test images correctly "
        f"(macro F1 {m['macro_f1']:.3f}"
        + (f", top-5 accuracy {_pct(m['top5_accuracy'])}" if "top5_accuracy" in m else "")
        + ")"
    )
    if train is not None:
        text += (
            f"; in its last training epoch it classified {_pct(train)} of its "
            + (f"{train_n:,} " if isinstance(train_n, int) else "")
            + "training images correctly"
        )
    out.append(
        finding(
            "accuracy",
            "info",
            text + ".",
            numbers={
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "n_images": n,
                "train_accuracy": train,
            },
            anchor="performance",
            label="Performance",
            recommendation="None needed.",
        )
    )
    broken = bool(m.get("all_outputs_nonfinite"))  # said once, as no-usable-output
    if not broken and train is not None and train - m["accuracy"] > 0.1:
        gap = train - m["accuracy"]
        out.append(
            finding(
                "train-test-gap",
                "medium",
                f"Test accuracy is {round(gap * 100)} points below training accuracy "
                f"({_pct(m['accuracy'])} on {n} test images against {_pct(train)} in the last "
                "training epoch): the test data differ from the training data in something the "
                "model relies on, or it overfits.",
                numbers={"train_accuracy": train, "accuracy": m["accuracy"], "gap": gap},
                anchor="performance",
                label="Performance",
                recommendation="Compare the training and test data (the shortcut check shows one "
                "cause); regularise or collect more varied training data.",
            )
        )
    weak = [] if broken else weak_classes(audit, rules)
    rows = [r for r in m["per_class"] if r["support"] > 0]
    if weak:
        parts = [f"“{r['class']}” (recall {_pct(r['recall'])}, n = {r['support']})" for r in weak]
        out.append(
            finding(
                "weak-classes",
                "medium",
                f"{len(weak)} of {len(rows)} classes {'is' if len(weak) == 1 else 'are'} weak "
                f"(recall below {_pct(rules['weak_class_recall'])} on at least "
                f"{rules['weak_class_min_images']} test images): " + _and(parts) + ".",
                numbers={
                    "weak": {r["class"]: {"recall": r["recall"], "n": r["support"]} for r in weak},
                    "weak_class_recall": rules["weak_class_recall"],
                    "weak_class_min_images": rules["weak_class_min_images"],
                },
                anchor="performance",
                label="Per-class table",
                recommendation="Look at these classes' misclassified images and confusions; "
                "add or relabel training data for them.",
            )
        )
    elif len(rows) > 1:
        worst = sorted(rows, key=lambda r: (r["recall"], r["class"]))[:2]
        best_recall = max(r["recall"] for r in rows)
        parts = [
            f"“{r['class']}” (recall {_pct(r['recall'])}, n = {r['support']})"
            for r in worst
            if r["recall"] < best_recall
        ]
        if parts:
            out.append(
                finding(
                    "weakest-classes",
                    "info",
                    "The weakest "
                    + ("classes are " if len(parts) > 1 else "class is ")
                    + " and ".join(parts)
                    + ".",
                    numbers={r["class"]: r["recall"] for r in worst},
                    anchor="performance",
                    label="Per-class table",
                    recommendation="None needed.",
                )
            )
    cm = m["confusion_matrix"]
    pairs = [
        (cm[i][j], names[i], names[j])
        for i in range(len(cm))
        for j in range(len(cm))
        if i != j and cm[i][j] > 0
    ]
    if pairs:
        pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
        count, true, pred = pairs[0]
        text = f"The most frequent confusion is “{true}” mistaken for “{pred}” ({count} image"
        text += "s)" if count != 1 else ")"
        if len(pairs) > 1:
            c2, t2, p2 = pairs[1]
            text += f", then “{t2}” for “{p2}” ({c2})"
        out.append(
            finding(
                "confusions",
                "info",
                text + ".",
                numbers={"pairs": [list(p) for p in pairs[:2]]},
                anchor="performance",
                label="Confusion matrix",
                recommendation="None needed.",
            )
        )
    wrong = m.get("mean_confidence_wrong")
    right = m.get("mean_confidence_correct")
    if wrong is not None and right is not None:
        confident = m.get("confident_mistakes", 0)
        text = (
            f"Mistakes are made with a mean confidence of {_pct(wrong)}, against "
            f"{_pct(right)} for correct predictions"
        )
        if confident:
            text += (
                f"; {confident} mistake{'s are' if confident != 1 else ' is'} made with "
                "over 90% confidence"
            )
        out.append(
            finding(
                "confident-mistakes" if confident else "confidence-of-mistakes",
                "low" if confident else "info",
                text + ".",
                numbers={
                    "mean_confidence_wrong": wrong,
                    "mean_confidence_correct": right,
                    "confident_mistakes": confident,
                },
                anchor="performance",
                label="Confidence histogram",
                recommendation=(
                    "Do not use the confidence alone to decide when to trust a prediction."
                    if confident
                    else "None needed."
                ),
            )
        )
    ece = m["ece"]
    if ece is not None:  # None: no finite output, said above
        calibrated = m.get("calibrated_images", n)
        numbers = {
            "ece": ece,
            "mean_confidence": m.get("mean_confidence"),
            "accuracy": m["accuracy"],
            "n_images": calibrated,
            "ece_review": rules["ece_review"],
        }
        if ece < 0.03:
            text = (
                f"Confidence is well calibrated (expected calibration error {ece:.3f}, "
                f"n = {calibrated} images)."
            )
            severity = "info"
        else:
            gap = (
                m["mean_confidence"] - m["accuracy"] if m.get("mean_confidence") is not None else 0
            )
            kind = "over-confident" if gap > 0 else "under-confident"
            text = (
                f"The model is {kind}: its mean confidence is {_pct(m['mean_confidence'])} while "
                f"its accuracy is {_pct(m['accuracy'])} (expected calibration error {ece:.3f}, "
                f"n = {calibrated} images)."
            )
            severity = "medium" if ece > rules["ece_review"] else "low"
        out.append(
            finding(
                "calibration",
                severity,
                text,
                numbers=numbers,
                anchor="performance",
                label="Reliability diagram",
                recommendation=(
                    "Calibrate the outputs (e.g. temperature scaling on held-out data) before "
                    "using the confidence as a probability."
                    if severity != "info"
                    else "None needed."
                ),
            )
        )
    return out


def _explanations(audit: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    expl = audit.get("explanations") or {}
    border = expl.get("border_summary")
    masks = bool((audit.get("dataset") or {}).get("masks"))
    if border:
        title = method_title(border["method"])
        text = (
            f"On average {_pct(border['mean'])} of the {title} saliency lies in the image border "
            f"(the outer band covering {_pct(border['area'])} of the area, where a map that "
            "ignored location would put that share)"
        )
        if border.get("class") is not None and border["class_value"] > border["mean"] + 0.05:
            text += (
                f"; class “{border['class']}” leans on the border most "
                f"({_pct(border['class_value'])})"
            )
        if not masks:
            text += "; without object masks the maps are checked against the border only"
        out.append(
            finding(
                "border-saliency",
                "info",
                text + ".",
                numbers={
                    "mean": border["mean"],
                    "area": border["area"],
                    "class": border.get("class"),
                    "class_value": border.get("class_value"),
                    "masks": masks,
                },
                anchor="class-average",
                label="Class-average maps",
                recommendation="None needed."
                if masks
                else "Give object masks (--masks) to check the maps against the objects.",
            )
        )
    flagged = expl.get("flagged_maps", 0)
    if flagged:
        out.append(
            finding(
                "flagged-maps",
                "low",
                f"{flagged} saliency maps were all zero or not a number; they are marked in the "
                "galleries instead of being drawn blank.",
                numbers={"flagged_maps": flagged},
                anchor="galleries",
                label="Galleries",
                recommendation="Try another layer or method for these images.",
            )
        )
    return out


def _data(audit: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    m = audit["metrics"]
    n = m["n_images"]
    bad = m.get("nonfinite_outputs", m.get("nan_predictions", 0))
    if bad and not m.get("all_outputs_nonfinite"):
        out.append(
            finding(
                "nonfinite-outputs",
                "medium",
                f"The model produced no valid output (NaN or infinite values) for {bad} of the "
                f"{n} images; they count as errors and are left out of calibration and the "
                "galleries.",
                numbers={"nonfinite_outputs": bad, "n_images": n},
                anchor="performance",
                label="Performance",
                recommendation="Find what these inputs have in common and fix the model's "
                "numerics (or the preprocessing).",
            )
        )
    if m.get("nonfinite_inputs"):
        k = m["nonfinite_inputs"]
        out.append(
            finding(
                "nonfinite-inputs",
                "low",
                f"{k} image{'s' if k != 1 else ''} held NaN or infinite pixel values and "
                f"{'were' if k != 1 else 'was'} skipped: a fault of the data, not of the model.",
                numbers={"nonfinite_inputs": k},
                anchor="appendix",
                label="Appendix",
                recommendation="Repair or remove these files.",
            )
        )
    empty = m.get("classes_without_images") or []
    if empty:
        out.append(
            finding(
                "classes-without-images",
                "medium",
                f"{len(empty)} class{'es' if len(empty) != 1 else ''} ({_names(list(empty))}) "
                f"{'have' if len(empty) != 1 else 'has'} no readable test image: "
                f"{'their' if len(empty) != 1 else 'its'} accuracy is unknown, and macro F1 is "
                "averaged over the other classes.",
                numbers={"classes_without_images": list(empty)},
                anchor="performance",
                label="Per-class table",
                recommendation="Add test images for these classes and audit again.",
            )
        )
    skipped = audit.get("skipped") or []
    if skipped:
        out.append(
            finding(
                "skipped-files",
                "low",
                f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} could not be used and "
                f"{'were' if len(skipped) != 1 else 'was'} skipped; the appendix lists each with "
                "the reason.",
                numbers={"skipped": len(skipped)},
                anchor="appendix",
                label="Appendix: skipped files",
                recommendation="Repair or remove these files.",
            )
        )
    return out
