"""The verdict: ``pass``, ``review`` or ``fail``, with the reasons that set it.

A function of numbers in ``audit.json`` only, like the findings. The rules, most severe first:

- ``fail``: the model produced no usable output (every output NaN or infinite); an intervention
  flagged a shortcut for at least one class; on generated data with a known shortcut, accuracy
  falls by more than :data:`SHORTCUT_ACCURACY_DROP` without it.
- ``review``: a CAM method shown in the report failed the randomization test; the expected
  calibration error is above :data:`ECE_REVIEW`; some outputs were not finite; a class had no
  readable test image.
- ``pass``: none of the above.
"""

from __future__ import annotations

from typing import Any

from reporter.audit.findings import percent
from reporter.explain.registry import method_title

__all__ = ["ECE_REVIEW", "SHORTCUT_ACCURACY_DROP", "verdict"]

ECE_REVIEW = 0.1
"""Expected calibration error above which the verdict is at least ``review``."""
SHORTCUT_ACCURACY_DROP = 0.1
"""Accuracy drop without a known shortcut (generated data) that fails the model."""


def _fails(audit: dict[str, Any]) -> list[str]:
    out = []
    m = audit.get("metrics") or {}
    if m.get("all_outputs_nonfinite"):
        out.append("the model produced no usable output (all outputs NaN or infinite)")
    shortcut = (audit.get("trust") or {}).get("shortcut") or {}
    flagged = [n for n, v in shortcut.items() if isinstance(v, dict) and v.get("flagged")]
    if flagged:
        names = ", ".join(f"“{n}”" for n in flagged)
        out.append(
            f"an intervention found a shortcut for {len(flagged)} of {len(shortcut)} classes "
            f"({names})"
        )
    check = (audit.get("dataset") or {}).get("shortcut_check")
    if check:
        kept, absent = check["accuracy_shortcut_kept"], check["accuracy_shortcut_absent"]
        if kept - absent > SHORTCUT_ACCURACY_DROP:
            out.append(
                f"accuracy falls from {percent(kept)} to {percent(absent)} without the background "
                "shortcut"
            )
    return out


def _reviews(audit: dict[str, Any]) -> list[str]:
    out = []
    sanity = (audit.get("trust") or {}).get("sanity") or {}
    failed = [m for m, v in sanity.items() if isinstance(v, dict) and v.get("status") == "failed"]
    if failed:
        titles = ", ".join(method_title(m) for m in failed)
        out.append(
            f"{titles} failed the randomization test: read {'its' if len(failed) == 1 else 'their'}"
            " maps as where the object is, not why the model decided"
        )
    m = audit.get("metrics") or {}
    ece = m.get("ece")
    if ece is not None and ece > ECE_REVIEW:
        out.append(f"confidence is poorly calibrated (ECE {ece:.3f} > {ECE_REVIEW})")
    if m.get("nonfinite_outputs") and not m.get("all_outputs_nonfinite"):
        out.append(f"{m['nonfinite_outputs']} outputs were NaN or infinite")
    if m.get("classes_without_images"):
        out.append(f"{len(m['classes_without_images'])} classes had no readable test image")
    return out


def verdict(audit: dict[str, Any]) -> dict[str, Any]:
    """``{"level": "pass" | "review" | "fail", "reasons": [...]}`` for an ``audit.json``."""
    fails = _fails(audit)
    if fails:
        return {"level": "fail", "reasons": fails}
    reviews = _reviews(audit)
    if reviews:
        return {"level": "review", "reasons": reviews}
    return {
        "level": "pass",
        "reasons": ["no rule for fail or review fired (see the trust checks for what was tested)"],
    }
