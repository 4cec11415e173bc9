"""The findings stage: plain-language sentences generated from the numbers in ``audit.json``.

Every sentence is a function of values in the audit context only (never of arrays, the model
or the data), so the cover page can never say something the data does not, and the same
sentences come back when a bundle is rendered again. The shortcut sentences are written here
and nowhere else.
"""

from __future__ import annotations

from typing import Any

from reporter.explain.registry import method_title

__all__ = ["key_findings", "shortcut_sentence"]


def _pct(x: float) -> str:
    return f"{x:.0%}" if abs(x - round(x, 2)) < 1e-9 or x >= 0.995 or x < 0.1 else f"{x:.1%}"


def _names(items: list[str]) -> str:
    quoted = [f"“{s}”" for s in items]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return _pct(lo) if round(lo, 2) == round(hi, 2) else f"{lo:.0%}–{hi:.0%}"


def shortcut_sentence(flagged: list[tuple[str, dict[str, Any]]], total: int) -> str:
    """One sentence for the classes flagged as suspected shortcuts (``(name, scores)`` pairs
    from ``trust.shortcut``), out of ``total`` classes checked."""
    title = method_title(flagged[0][1].get("method", "")) if flagged[0][1].get("method") else "the"
    if len(flagged) == 1:
        name, v = flagged[0]
        if v.get("basis") == "mask":
            return (
                f"Suspected shortcut for class “{name}”: {v['outside_fraction']:.0%} of the "
                f"{title} saliency lies away from the object (the object and its outline cover "
                f"{v['object_area']:.0%} of the image), so the model relies on the background "
                "or context rather than the object itself."
            )
        return (
            f"Suspected shortcut for class “{name}”: {v['border_fraction']:.0%} of the {title} "
            "saliency lies on the image border, far more than its share of the area; check the "
            "evidence images for watermarks, frames or background cues."
        )
    names = _names([n for n, _ in flagged])
    head = f"Suspected shortcut for {len(flagged)} of {total} classes ({names}): "
    if all(v.get("basis") == "mask" for _, v in flagged):
        return head + (
            f"{_range([v['outside_fraction'] for _, v in flagged])} of their {title} saliency "
            f"lies away from the objects, which with their outline cover "
            f"{_range([v['object_area'] for _, v in flagged])} of the image; the model relies on "
            "the background or context rather than the objects."
        )
    return head + (
        f"{_range([v['border_fraction'] for _, v in flagged])} of their {title} saliency lies on "
        "the image border, far more than its share of the area; look for frames, watermarks or "
        "background cues."
    )


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
    flagged = [
        (name, v)
        for name, v in (trust.get("shortcut") or {}).items()
        if isinstance(v, dict) and v.get("flagged")
    ]
    if flagged:
        out.append(shortcut_sentence(flagged, len(trust["shortcut"])))
    for method, verdict in (trust.get("sanity") or {}).items():
        if isinstance(verdict, dict) and verdict.get("passed") is False:
            layer = verdict.get("layer", "")
            out.append(
                f"{method_title(method)}"
                + (f" on layer {layer}" if layer else "")
                + " failed the randomization test: its maps do not depend on the learned "
                "weights; do not read them as explanations."
            )
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
