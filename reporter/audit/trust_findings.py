"""Findings from the trust stage's numbers, as records the findings list takes in.

Every function reads ``audit.json`` (a dict) only and returns a list of records::

    {"id", "severity": "high"|"medium"|"low"|"info", "statement", "numbers": {...},
     "evidence": {"anchor", "label"}, "recommendation"}

Each statement is built from the record's ``numbers`` (and names), so a test can check it
against them. :func:`trust_findings` returns them all, most severe first.
"""

from __future__ import annotations

from typing import Any

from reporter.bundle import TRUST_CHECKS

__all__ = [
    "BLURRED_ACCURACY",
    "BLURRED_LOWER",
    "borderline_sanity_findings",
    "budget_findings",
    "cue_location_findings",
    "fully_removed_findings",
    "trust_findings",
]

BLURRED_ACCURACY = 0.8
"""Fully blurred images still classified right this often, with the Wilson interval's lower
end above :data:`BLURRED_LOWER`, are a finding: the model reads what a blur keeps. Measured: a
clean gapnet on ``shapes`` keeps 56 % (95 % interval 39-72 %, n = 32) of fully blurred images
(a 1.6-pixel blur keeps large shapes' outlines), so the rule sits well above that."""

BLURRED_LOWER = 0.5
"""... and the interval's lower end above this (most images, not chance)."""

_SEVERITY = {"high": 0, "medium": 1, "low": 2, "info": 3}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def cue_location_findings(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``high`` record per class whose cue region was located by the paste intervention
    (``trust.shortcut[c].cue_position`` set): where the cue is and what pasting it does."""
    out: list[dict[str, Any]] = []
    shortcut = (audit.get("trust") or {}).get("shortcut") or {}
    for name, entry in shortcut.items():
        if not isinstance(entry, dict) or not entry.get("cue_position"):
            continue
        region = entry.get("region") or {}
        paste = region.get("paste") or {}
        numbers = {
            "position": entry["cue_position"],
            "box": entry.get("cue_box"),
            "area_fraction": region.get("area_fraction"),
            "flip_rate": region.get("flip_rate"),
            "control_flip_rate": region.get("control_flip_rate"),
            "n": paste.get("n_eligible"),
        }
        control = numbers["control_flip_rate"]
        statement = (
            f"The cue of class “{name}” sits in the {numbers['position']}: pasting that region "
            f"({_pct(numbers['area_fraction'] or 0.0)} of the image) into {numbers['n']} images "
            f"of other classes makes the model predict “{name}” for "
            f"{_pct(numbers['flip_rate'] or 0.0)} of them"
            + (
                f" ({_pct(control)} with the same region from another class)."
                if control is not None
                else "."
            )
        )
        out.append(
            {
                "id": f"trust-cue-{name}",
                "severity": "high",
                "statement": statement,
                "numbers": numbers,
                "evidence": {"anchor": "trust-shortcut", "label": "Shortcut detection"},
                "recommendation": (
                    f"Look at the {numbers['position']} of the “{name}” training images: remove "
                    "the mark (or put it on every class) and retrain, then audit again."
                ),
            }
        )
    return out


def fully_removed_findings(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``low`` record when fully blurred images are still classified right at least
    :data:`BLURRED_ACCURACY` of the time with the interval's lower end above
    :data:`BLURRED_LOWER` and above chance. Low, not more: a blur also keeps coarse shape (a
    clean model of smooth digits keeps them too); it weighs as evidence beside a flagged
    shortcut."""
    faith = (audit.get("trust") or {}).get("faithfulness") or {}
    removed = faith.get("fully_removed") or {}
    blur = (removed.get("baselines") or {}).get("blur")
    if not blur:
        return []
    acc, lo = blur["accuracy"], blur["interval"][0]
    chance = removed["chance"]
    if not (acc >= BLURRED_ACCURACY and lo > max(BLURRED_LOWER, chance)):
        return []
    numbers = {
        "accuracy": acc,
        "interval": blur["interval"],
        "confidence": blur["confidence"],
        "intact_accuracy": removed["intact_accuracy"],
        "chance": chance,
        "n": removed["n"],
    }
    statement = (
        f"Fully blurred images are still classified correctly {_pct(acc)} of the time "
        f"(95% interval {_pct(blur['interval'][0])}–{_pct(blur['interval'][1])}, n = "
        f"{removed['n']}; {_pct(removed['intact_accuracy'])} intact, chance {_pct(chance)}): "
        "the model reads something a blur keeps (colour, the background or coarse shape), not "
        "the object's detail; with a flagged shortcut, this supports it."
    )
    return [
        {
            "id": "trust-fully-blurred",
            "severity": "low",
            "statement": statement,
            "numbers": numbers,
            "evidence": {"anchor": "trust-faithfulness", "label": "Faithfulness"},
            "recommendation": (
                "Check whether colour or background gives the class away (the shortcut checks), "
                "and test the model on images where it does not."
            ),
        }
    ]


def borderline_sanity_findings(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``low`` record per method and layer whose randomization status is ``inconclusive``
    (shown as borderline): its interval, the threshold and n."""
    trust = audit.get("trust") or {}
    out: list[dict[str, Any]] = []
    for method, entry in (trust.get("sanity") or {}).items():
        for layer, g in (entry.get("layers") or {}).items():
            if g.get("status") != "inconclusive" or g.get("interval") is None:
                continue
            lo, hi = g["interval"]
            if lo is None or hi is None:
                continue
            numbers = {
                "spearman": g["spearman"],
                "interval": [lo, hi],
                "threshold": g["thresholds"]["spearman"],
                "n_images": g.get("n_images"),
                "n_seeds": g.get("n_seeds"),
            }
            statement = (
                f"The randomization check of {method} at {layer} is borderline: rank "
                f"correlation {g['spearman']:.2f} (95% interval {lo:.2f}–{hi:.2f}) against the "
                f"threshold {numbers['threshold']:.2f}, on {numbers['n_images']} images and "
                f"{numbers['n_seeds']} seeds."
            )
            out.append(
                {
                    "id": f"trust-sanity-borderline-{method}-{layer}",
                    "severity": "low",
                    "statement": statement,
                    "numbers": numbers,
                    "evidence": {"anchor": "trust-sanity", "label": "Sanity check"},
                    "recommendation": (
                        "Read its maps with care, or raise trust.sanity_images in audit.toml "
                        "for a narrower interval."
                    ),
                }
            )
    return out


def budget_findings(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``info`` record when the trust stage's time budget reduced its image counts
    (``trust.budget.reduced``): which checks ran on how many of their configured images, the
    measured cost per image that made it so, and what the configured counts would take."""
    budget = (audit.get("trust") or {}).get("budget") or {}
    if not budget.get("reduced"):
        return []
    requested, images = budget["requested"], budget["images"]
    cut = [c for c in TRUST_CHECKS if c in images and images[c] < requested[c]]
    measured = budget["measured"]
    numbers = {
        "budget_seconds": budget["budget_seconds"],
        "forward_ms": measured["forward_ms"],
        "explain_ms": measured["explain_ms"],
        "requested": {c: requested[c] for c in cut},
        "images": {c: images[c] for c in cut},
        "estimated_seconds": round(sum(measured["estimated_seconds"].values())),
    }
    parts = [f"{TRUST_CHECKS[c]} {images[c]} of {requested[c]} images" for c in cut]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    statement = (
        f"The trust checks ran on fewer images than configured to fit their time budget of "
        f"{numbers['budget_seconds']:g} s (this model took {numbers['forward_ms']:.0f} ms per "
        f"image for a forward pass and {numbers['explain_ms']:.0f} ms for its maps here): "
        f"{listed}. Their intervals are wider than the configured counts give."
    )
    return [
        {
            "id": "trust-budget-reduced",
            "severity": "info",
            "statement": statement,
            "numbers": numbers,
            "evidence": {"anchor": "trust", "label": "Trust checks"},
            "recommendation": (
                "For the configured counts, run with --trust-budget 0 (or [trust] "
                f"budget_seconds = 0) and allow about {numbers['estimated_seconds']} s for "
                "the checks."
            ),
        }
    ]


def trust_findings(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """Every record above, most severe first (stable within a severity)."""
    records = (
        cue_location_findings(audit)
        + fully_removed_findings(audit)
        + borderline_sanity_findings(audit)
        + budget_findings(audit)
    )
    return sorted(records, key=lambda r: _SEVERITY[r["severity"]])
