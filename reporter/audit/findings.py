"""The findings stage: plain-language sentences generated from the numbers in ``audit.json``.

Every sentence is a function of values in the audit context only (never of arrays, the model
or the data), so the cover page can never say something the data does not, and the same
sentences come back when a bundle is rendered again. The shortcut sentences are written here
and nowhere else.
"""

from __future__ import annotations

from typing import Any

from reporter.explain.registry import method_title

__all__ = ["key_findings", "percent", "shortcut_sentence"]


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
            f": with the weights randomized ({n_seeds} seeds), its maps keep a rank correlation "
            f"of {v['spearman']:.2f}"
        )
        if lo is not None:
            text += f" (95% interval {lo:.2f}–{hi:.2f})"
        text += " with the trained model's"
        if v.get("floor_spearman") is not None:
            text += f"; two random networks agree {v['floor_spearman']:.2f} with each other"
    meaning = (v.get("meaning") or "").strip()
    return text + (f". {meaning[0].upper()}{meaning[1:]}" if meaning else ".")


def key_findings(audit: dict[str, Any]) -> list[str]:
    """Return the cover page's findings, most important first: a model with no usable output,
    then trust problems (they change how everything else must be read), the intervention on a
    known shortcut, performance, explanation statistics and data problems."""
    out = _integrity(audit) + _trust(audit)
    background, other = _shortcut_check(audit)
    expl = audit.get("explanations") or {}
    unavailable = (
        [expl["unavailable"]] if not expl.get("methods") and expl.get("unavailable") else []
    )
    return (
        background
        + out
        + other
        + _performance(audit)
        + _explanations(audit)
        + _data(audit)
        + unavailable
    )


def _integrity(audit: dict[str, Any]) -> list[str]:
    out: list[str] = []
    m = audit["metrics"]
    n = m["n_images"]
    if m.get("all_outputs_nonfinite"):
        # nothing else the report says about this model means anything
        out.append(
            f"The model produced no usable output: all {n} of its outputs hold NaN or infinite "
            "values. No metric, map or check of this report can be read; fix the model or its "
            "checkpoint first."
        )

    return out


def _trust(audit: dict[str, Any]) -> list[str]:
    out: list[str] = []
    trust = audit.get("trust") or {}
    shortcut = trust.get("shortcut") or {}
    flagged = [(n, v) for n, v in shortcut.items() if isinstance(v, dict) and v.get("flagged")]
    if flagged:
        out.append(shortcut_sentence(flagged, len(shortcut)))
    elif shortcut:
        clear = _no_shortcut_sentence(shortcut)
        if clear:
            out.append(clear)
    sanity = trust.get("sanity") or {}
    for method, v in sanity.items():
        if isinstance(v, dict) and v.get("status") == "failed":
            out.append(_sanity_sentence(method, v))
    for method, v in sanity.items():
        if isinstance(v, dict) and v.get("status") == "inconclusive":
            out.append(_sanity_sentence(method, v))
    # classes whose saliency statistics alone suggest a shortcut ("inspect") are listed in the
    # shortcut table, not on the cover: an intervention that found nothing outweighs them
    return out


def _shortcut_check(audit: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The intervention on generated data with a known background shortcut: ``(first, later)``."""
    check = (audit.get("dataset") or {}).get("shortcut_check")
    if not check:
        return [], []
    kept, absent = check["accuracy_shortcut_kept"], check["accuracy_shortcut_absent"]
    if kept - absent > 0.1:
        return [
            f"The model relies on the background: its accuracy is {_pct(kept)} when the "
            f"background colour matches the class, as it did in training, and "
            f"{_pct(absent)} when it does not."
        ], []
    return [], [
        f"The background does not carry the decision: accuracy is {_pct(kept)} with "
        f"the training background shortcut and {_pct(absent)} without it."
    ]


def _performance(audit: dict[str, Any]) -> list[str]:
    out: list[str] = []
    m = audit["metrics"]
    n = m["n_images"]
    names = [row["class"] for row in m["per_class"]]
    out.append(
        f"The model classifies {_pct(m['accuracy'])} of the {n} test images correctly "
        f"(macro F1 {m['macro_f1']:.3f}"
        + (f", top-5 accuracy {_pct(m['top5_accuracy'])}" if "top5_accuracy" in m else "")
        + ")."
    )
    rows = [r for r in m["per_class"] if r["support"] > 0]
    if len(rows) > 1:
        worst = sorted(rows, key=lambda r: (r["recall"], r["class"]))[:2]
        best_recall = max(r["recall"] for r in rows)
        if worst[0]["recall"] < best_recall:
            parts = [
                f"“{r['class']}” (recall {_pct(r['recall'])})"
                for r in worst
                if r["recall"] < best_recall
            ]
            out.append(
                "The weakest "
                + ("classes are " if len(parts) > 1 else "class is ")
                + " and ".join(parts)
                + "."
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
        out.append(text + ".")
    wrong = m.get("mean_confidence_wrong")
    right = m.get("mean_confidence_correct")
    if wrong is not None and right is not None:
        confident = audit["metrics"].get("confident_mistakes", 0)
        text = (
            f"Mistakes are made with a mean confidence of {_pct(wrong)}, against "
            f"{_pct(right)} for correct predictions"
        )
        if confident:
            text += (
                f"; {confident} mistake{'s are' if confident != 1 else ' is'} made with "
                "over 90% confidence"
            )
        out.append(text + ".")
    ece = m["ece"]
    gap = (m["mean_confidence"] - m["accuracy"]) if m.get("mean_confidence") is not None else 0.0
    if ece is None:
        pass  # no finite output: said above
    elif ece < 0.03:
        out.append(f"Confidence is well calibrated (expected calibration error {ece:.3f}).")
    else:
        kind = "over-confident" if gap > 0 else "under-confident"
        out.append(
            f"The model is {kind}: its mean confidence is {_pct(m['mean_confidence'])} while its "
            f"accuracy is {_pct(m['accuracy'])} (expected calibration error {ece:.3f})."
        )
    return out


def _explanations(audit: dict[str, Any]) -> list[str]:
    out: list[str] = []
    expl = audit.get("explanations") or {}
    border = expl.get("border_summary")
    if border:
        title = method_title(border["method"])
        text = (
            f"On average {_pct(border['mean'])} of the {title} saliency lies in the image border "
            f"(the outer band covering {_pct(border['area'])} of the area)"
        )
        if border.get("class") is not None and border["class_value"] > border["mean"] + 0.05:
            text += (
                f"; class “{border['class']}” leans on the border most "
                f"({_pct(border['class_value'])})"
            )
        out.append(text + ".")
    flagged = expl.get("flagged_maps", 0)
    if flagged:
        out.append(
            f"{flagged} saliency maps were all zero or not a number; they are marked in the "
            "galleries instead of being drawn blank."
        )
    return out


def _data(audit: dict[str, Any]) -> list[str]:
    out: list[str] = []
    m = audit["metrics"]
    n = m["n_images"]
    bad = m.get("nonfinite_outputs", m.get("nan_predictions", 0))
    if bad and not m.get("all_outputs_nonfinite"):
        out.append(
            f"The model produced no valid output (NaN or infinite values) for {bad} of the {n} "
            "images; they count as errors and are left out of calibration and the galleries."
        )
    if m.get("nonfinite_inputs"):
        k = m["nonfinite_inputs"]
        out.append(
            f"{k} image{'s' if k != 1 else ''} held NaN or infinite pixel values and "
            f"{'were' if k != 1 else 'was'} skipped: a fault of the data, not of the model."
        )
    empty = m.get("classes_without_images") or []
    if empty:
        out.append(
            f"{len(empty)} class{'es' if len(empty) != 1 else ''} ({_names(list(empty))}) "
            f"{'have' if len(empty) != 1 else 'has'} no readable test image: "
            f"{'their' if len(empty) != 1 else 'its'} accuracy is unknown, and macro F1 is "
            "averaged over the other classes."
        )
    skipped = audit.get("skipped") or []
    if skipped:
        out.append(
            f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} could not be used and "
            f"{'were' if len(skipped) != 1 else 'was'} skipped; the appendix lists each with "
            "the reason."
        )
    return out
