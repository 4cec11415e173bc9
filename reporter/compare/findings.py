"""Sentences of a comparison, from the numbers of ``compare.json`` alone.

Each finding is a record in the audit's format: ``{"id", "severity", "statement", "numbers",
"evidence": {"anchor", "label"}, "recommendation"}``. :func:`comparison_level` sums them up as
one word for the first page: ``regressed``, ``review``, ``improved`` or ``unchanged``.
"""

from __future__ import annotations

from typing import Any

from reporter.bundle import TRUST_CHECKS

__all__ = [
    "ALPHA",
    "DRIFT_NOTABLE",
    "LEVEL_STYLE",
    "comparison_findings",
    "comparison_level",
    "pct",
    "points",
]

ALPHA = 0.05
"""A change is called significant when McNemar's p (or the interval) says so at this level."""

DRIFT_NOTABLE = 0.3
"""Explanation drift (1 - median rank correlation) from which the maps are said to have moved."""

LEVEL_STYLE = {"regressed": "fail", "review": "review", "improved": "pass", "unchanged": "pass"}
"""The audit theme's verdict colour for each comparison level."""

_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


def pct(x: float | None, digits: int = 1) -> str:
    """``0.4567`` -> ``45.7%``."""
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def points(x: float | None, digits: int = 1) -> str:
    """A change of a fraction in percentage points, signed: ``-0.0425`` -> ``-4.2 points``."""
    return "n/a" if x is None else f"{x * 100:+.{digits}f} points"


def _interval_points(iv: list[float] | None) -> str:
    if not iv:
        return ""
    return f", 95% interval {iv[0] * 100:+.1f} to {iv[1] * 100:+.1f}"


def _interval(iv: list[float] | None, digits: int = 3) -> str:
    if not iv:
        return ""
    return f", 95% interval {iv[0]:+.{digits}f} to {iv[1]:+.{digits}f}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _quote(names: list[str]) -> str:
    q = [f"\u201c{n}\u201d" for n in names]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " and " + q[-1]


def _finding(fid: str, severity: str, statement: str, numbers: dict[str, Any], anchor: str,
             label: str, recommendation: str) -> dict[str, Any]:  # fmt: skip
    return {
        "id": fid,
        "severity": severity,
        "statement": statement,
        "numbers": numbers,
        "evidence": {"anchor": anchor, "label": label},
        "recommendation": recommendation,
    }


def _excludes_zero(iv: list[float] | None) -> bool:
    return bool(iv) and (iv[0] > 0 or iv[1] < 0)  # type: ignore[index]


def _matching(c: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    m, cls = c["matching"], c["classes"]
    if not cls["same"]:
        parts = []
        if cls["only_old"]:
            parts.append(f"{_quote(cls['only_old'])} only in the old audit")
        if cls["only_new"]:
            parts.append(f"{_quote(cls['only_new'])} only in the new one")
        detail = "; ".join(parts) if parts else "the same names in another order"
        out.append(_finding(
            "classes-differ", "medium",
            f"The two models do not have the same classes ({len(cls['old'])} before, "
            f"{len(cls['new'])} now: {detail}). Images are compared on the "
            f"{len(cls['shared'])} classes both have, matched by name.",
            {"old": len(cls["old"]), "new": len(cls["new"]), "shared": len(cls["shared"])},
            "matching", "Matching", "Check that the class change was intended; per-class "
            "numbers cover only the shared classes.",
        ))  # fmt: skip
    if not m["same_test_set"]:
        out.append(_finding(
            "test-sets-differ", "info" if m["compared"] else "medium",
            f"The test sets differ: {m['matched']} images are in both (matched by content); "
            f"{m['unmatched_old']} of the old audit's {m['old_images']} and "
            f"{m['unmatched_new']} of the new audit's {m['new_images']} are in one only"
            + (f"; {m['label_disagreements']} shared images carry different labels"
               if m["label_disagreements"] else "")
            + f". The paired numbers below use the {m['compared']} images compared.",
            {k: m[k] for k in ("matched", "unmatched_old", "unmatched_new", "compared")},
            "matching", "Matching",
            "Audit both models on the same test images for the most precise comparison."
            if m["compared"] else "The audits share no image: compare audits of the same data.",
        ))  # fmt: skip
    return out


def _accuracy(c: dict[str, Any]) -> list[dict[str, Any]]:
    a = c["metrics"]["accuracy"]
    if a["delta"] is None:
        return []
    mc = a["mcnemar"]
    n = c["metrics"]["n"]
    sig = mc["p"] < ALPHA
    base = (
        f"Accuracy on the {n} shared images went from {pct(a['old'])} to {pct(a['new'])} "
        f"({points(a['delta'])}{_interval_points(a['interval'])}): {mc['b']} images the old "
        f"model got right are now wrong and {mc['c']} wrong ones are now right (McNemar "
        f"{_p(mc['p'])})"
    )
    nums = {"old": a["old"], "new": a["new"], "delta": a["delta"], "p": mc["p"],
            "b": mc["b"], "c": mc["c"]}  # fmt: skip
    if sig and a["delta"] < 0:
        return [
            _finding(
                "accuracy-down",
                "high",
                base + "; the drop is not chance.",
                nums,
                "metrics",
                "Metric changes",
                "Find what changed in training or data before shipping this model.",
            )
        ]
    if sig and a["delta"] > 0:
        return [
            _finding(
                "accuracy-up",
                "info",
                base + "; the gain is not chance.",
                nums,
                "metrics",
                "Metric changes",
                "No action needed.",
            )
        ]
    return [_finding("accuracy-same", "info",
                     base + f"; a change this size is within chance (p \u2265 {ALPHA}).", nums,
                     "metrics", "Metric changes", "No action needed.")]  # fmt: skip


def _classes(c: dict[str, Any]) -> list[dict[str, Any]]:
    down = [
        r
        for r in c["metrics"]["per_class"]
        if r["delta"] is not None and r["delta"] < 0 and _excludes_zero(r["interval"])
    ]
    if not down:
        return []
    down.sort(key=lambda r: r["delta"])
    worst = down[0]
    names = [r["class"] for r in down]
    return [_finding(
        "class-recall-down", "high" if worst["delta"] <= -0.1 else "medium",
        f"Recall fell for {len(down)} class{'es' if len(down) > 1 else ''} ({_quote(names)}); "
        f"most for \u201c{worst['class']}\u201d, from {pct(worst['old'])} to {pct(worst['new'])} "
        f"({points(worst['delta'])}{_interval_points(worst['interval'])}, n = {worst['n']}).",
        {"classes": names, "worst": worst["class"], "delta": worst["delta"]},
        "per-class", "Recall by class",
        "Look at the new mistakes of these classes (confusion shifts) before shipping.",
    )]  # fmt: skip


def _ece(c: dict[str, Any]) -> list[dict[str, Any]]:
    e = c["metrics"]["ece"]
    if e["delta"] is None or not _excludes_zero(e["interval"]):
        return []
    worse = e["delta"] > 0
    return [_finding(
        "ece-up" if worse else "ece-down", "medium" if worse else "info",
        f"Calibration got {'worse' if worse else 'better'}: the expected calibration error went "
        f"from {e['old']:.3f} to {e['new']:.3f} ({e['delta']:+.3f}{_interval(e['interval'])}).",
        {"old": e["old"], "new": e["new"], "delta": e["delta"]}, "metrics", "Metric changes",
        "Recalibrate (e.g. temperature scaling) if confidences are used downstream."
        if worse else "No action needed.",
    )]  # fmt: skip


def _confusions(c: dict[str, Any]) -> list[dict[str, Any]]:
    n = max(c["metrics"]["n"], 1)
    new = [s for s in c["confusion"]["shifts"]
           if s["kind"] == "appeared" and s["new"] >= max(3, 0.01 * n)]  # fmt: skip
    if not new:
        return []
    top = new[:3]
    listed = "; ".join(f"\u201c{s['true']}\u201d taken for \u201c{s['pred']}\u201d {s['new']} "
                       "times" for s in top)  # fmt: skip
    return [_finding(
        "confusions-new", "medium",
        f"{len(new)} confusion{'s' if len(new) > 1 else ''} the old model never made now "
        f"appear{'s' if len(new) == 1 else ''}: {listed}"
        + (f" (and {len(new) - 3} more)" if len(new) > 3 else "") + ".",
        {"count": len(new), "top": [[s["true"], s["pred"], s["new"]] for s in top]},
        "confusion", "Confusion shifts",
        "Check whether these classes changed in the training data.",
    )]  # fmt: skip


def _trust(c: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    t = c["trust"]
    new_sc = [s["class"] for s in t["shortcut"] if s["change"] == "new"]
    if new_sc:
        out.append(_finding(
            "shortcut-new", "high",
            f"A shortcut is newly flagged for {len(new_sc)} class{'es' if len(new_sc) > 1 else ''}"
            f" ({_quote(new_sc)}): the old audit's intervention found none there.",
            {"classes": new_sc}, "trust", "Trust changes",
            "Read the new audit's shortcut evidence; retrain with the shortcut broken.",
        ))  # fmt: skip
    gone = [s["class"] for s in t["shortcut"] if s["change"] == "gone"]
    if gone:
        out.append(_finding(
            "shortcut-gone", "info",
            f"The shortcut flagged before for {_quote(gone)} is no longer found.",
            {"classes": gone}, "trust", "Trust changes", "No action needed.",
        ))  # fmt: skip
    images = t.get("images") or {}
    differ = images.get("differ") or []
    if differ and (t["sanity"] or t["shortcut"]):
        parts = [f"{TRUST_CHECKS[k]} {images['old'][k]} → {images['new'][k]}" for k in differ]
        out.append(_finding(
            "trust-images-differ", "info",
            "The two audits ran their trust checks on different numbers of images ("
            + ", ".join(parts) + "): a status or flag that changed may come from the sample "
            "size (and its interval) rather than from the model.",
            {"old": {k: images["old"][k] for k in differ},
             "new": {k: images["new"][k] for k in differ}},
            "trust", "Trust changes",
            "Audit both models with the same [trust] counts and --trust-budget 0 before "
            "reading a changed trust status as the model's.",
        ))  # fmt: skip
    failed = [s["method"] for s in t["sanity"] if s["change"] == "newly failed"]
    if failed:
        out.append(_finding(
            "sanity-new-failure", "medium",
            f"{_quote(failed)} now fail{'s' if len(failed) == 1 else ''} the randomization test "
            "and did not before: read their maps as where the object is, not why.",
            {"methods": failed}, "trust", "Trust changes",
            "Rely on the methods that pass for this model version.",
        ))  # fmt: skip
    v = c["verdict"]
    if v["change"] == "worse":
        out.append(_finding(
            "verdict-worse", "high",
            f"The audit's verdict got worse, from {v['old']} to {v['new']}"
            + (f": {v['reasons_new'][0]}" if v["reasons_new"] else "") + ".",
            {"old": v["old"], "new": v["new"]}, "trust", "Trust changes",
            "Read the new audit's decision page before shipping.",
        ))  # fmt: skip
    elif v["change"] == "better":
        out.append(_finding(
            "verdict-better", "info",
            f"The audit's verdict improved, from {v['old']} to {v['new']}.",
            {"old": v["old"], "new": v["new"]}, "trust", "Trust changes", "No action needed.",
        ))  # fmt: skip
    return out


def _drift(c: dict[str, Any]) -> list[dict[str, Any]]:
    d = c["drift"]
    if d["value"] is None:
        return []
    m = d["methods"][d["method"]]
    acc_same = c["metrics"]["accuracy"]["mcnemar"]["p"] >= ALPHA
    moved = d["value"] > DRIFT_NOTABLE
    classes = [(name, q["median"]) for name, q in m["per_class"].items()
               if q["median"] is not None and 1.0 - q["median"] > DRIFT_NOTABLE]  # fmt: skip
    classes.sort(key=lambda kv: kv[1])
    base = (
        f"On the {m['n']} images whose prediction did not change, the {d['method']} maps of the "
        f"two models have a median rank correlation of {m['median']:.2f} (drift "
        f"{d['value']:.2f})"
    )
    nums = {"method": d["method"], "drift": d["value"], "median_rho": m["median"], "n": m["n"],
            "classes": [name for name, _ in classes]}  # fmt: skip
    where = "; ".join(f"\u201c{name}\u201d {med:.2f}" for name, med in classes[:3])
    if not moved and not classes:
        return [
            _finding(
                "drift-small",
                "info",
                base + ": the models look at the same regions.",
                nums,
                "drift",
                "Explanation drift",
                "No action needed.",
            )
        ]
    if not moved:
        return [_finding(
            "drift-class", "medium",
            base + f", but for {len(classes)} class{'es' if len(classes) > 1 else ''} the maps "
            f"moved (median rank correlation {where}).", nums, "drift", "Explanation drift",
            "Look at the most-moved images of these classes.",
        )]  # fmt: skip
    if acc_same:
        return [_finding(
            "right-for-new-reasons", "medium",
            base + ", while accuracy did not change significantly: the model is right for "
            "new reasons.", nums, "drift", "Explanation drift",
            "Look at the most-moved images: check that the new evidence is the object.",
        )]  # fmt: skip
    return [_finding("drift-large", "medium", base + ": the models look at different regions.",
                     nums, "drift", "Explanation drift",
                     "Look at the most-moved images beside the accuracy changes.")]  # fmt: skip


def comparison_findings(c: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings of a comparison, most severe first (stable within a severity)."""
    found = [*_matching(c), *_accuracy(c), *_classes(c), *_ece(c), *_confusions(c), *_trust(c),
             *_drift(c)]  # fmt: skip
    return sorted(found, key=lambda f: _SEVERITY_ORDER[f["severity"]])


def comparison_level(findings: list[dict[str, Any]]) -> str:
    """``regressed`` (a high finding), ``review`` (a medium one), ``improved`` (a significant
    gain and nothing worse) or ``unchanged``."""
    severities = {f["severity"] for f in findings}
    if "high" in severities:
        return "regressed"
    if "medium" in severities:
        return "review"
    gains = {"accuracy-up", "ece-down", "verdict-better", "shortcut-gone"}
    return "improved" if any(f["id"] in gains for f in findings) else "unchanged"
