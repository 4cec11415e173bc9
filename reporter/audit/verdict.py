"""The verdict: ``pass``, ``review`` or ``fail``, with the one or two reasons that set it.

A function of numbers in ``audit.json`` and of the ``[verdict]`` rules
(:data:`reporter.config.VERDICT_FIELDS`, defaults in brackets) only, like the findings. The
rules, most severe first:

- ``fail``: the model produced no usable output (every output NaN or infinite); an intervention
  flagged a shortcut for at least one class (``shortcut_fail`` [true]; when false, it sets
  ``review``); on generated data with a known shortcut, accuracy falls by more than
  ``shortcut_accuracy_drop`` [0.1] without it.
- ``review``: a CAM method shown in the report failed the randomization test
  (``sanity_review`` [true]); the expected calibration error is above ``ece_review`` [0.1];
  a class is weak: recall below ``weak_class_recall`` [0.5] on at least
  ``weak_class_min_images`` [10] test images; some outputs were not finite; a class had no
  readable test image.
- ``pass``: none of the above.

The reasons of the level are kept (at most :data:`MAX_REASONS`, the count of the others said in
the last); the rules used are recorded as ``verdict.rules``.
"""

from __future__ import annotations

from typing import Any

from reporter.audit.findings import percent, verdict_rules, weak_classes
from reporter.explain.registry import method_title

__all__ = ["ECE_REVIEW", "MAX_REASONS", "SHORTCUT_ACCURACY_DROP", "verdict"]

ECE_REVIEW = 0.1
"""Default expected calibration error above which the verdict is at least ``review``."""
SHORTCUT_ACCURACY_DROP = 0.1
"""Default accuracy drop without a known shortcut (generated data) that fails the model."""
MAX_REASONS = 2
"""Reasons shown; further ones that fired are counted in the last."""


def _shortcut(audit: dict[str, Any]) -> str | None:
    shortcut = (audit.get("trust") or {}).get("shortcut") or {}
    flagged = [n for n, v in shortcut.items() if isinstance(v, dict) and v.get("flagged")]
    if not flagged:
        return None
    names = ", ".join(f"“{n}”" for n in flagged)
    return (
        f"an intervention found a shortcut for {len(flagged)} of {len(shortcut)} classes ({names})"
    )


def _fails(audit: dict[str, Any], rules: dict[str, Any]) -> list[str]:
    out = []
    m = audit.get("metrics") or {}
    if m.get("all_outputs_nonfinite"):
        out.append("the model produced no usable output (all outputs NaN or infinite)")
    check = (audit.get("dataset") or {}).get("shortcut_check")
    if check:
        kept, absent = check["accuracy_shortcut_kept"], check["accuracy_shortcut_absent"]
        if kept - absent > rules["shortcut_accuracy_drop"]:
            out.append(
                f"accuracy falls from {percent(kept)} to {percent(absent)} without the background "
                f"shortcut (a drop above {percent(rules['shortcut_accuracy_drop'])})"
            )
    shortcut = _shortcut(audit)
    if shortcut and rules["shortcut_fail"]:
        out.append(shortcut)
    return out


def _reviews(audit: dict[str, Any], rules: dict[str, Any]) -> list[str]:
    out = []
    shortcut = _shortcut(audit)
    if shortcut and not rules["shortcut_fail"]:
        out.append(shortcut)
    sanity = (audit.get("trust") or {}).get("sanity") or {}
    failed = [m for m, v in sanity.items() if isinstance(v, dict) and v.get("status") == "failed"]
    if failed and rules["sanity_review"]:
        titles = " and ".join(
            method_title(m)
            + (
                f" (rank correlation {sanity[m]['spearman']:.2f})"
                if isinstance(sanity[m].get("spearman"), (int, float))
                else ""
            )
            for m in failed
        )
        out.append(
            f"{titles} failed the randomization test: read {'its' if len(failed) == 1 else 'their'}"
            " maps as where the object is, not why the model decided"
        )
    m = audit.get("metrics") or {}
    ece = m.get("ece")
    if ece is not None and ece > rules["ece_review"]:
        out.append(f"confidence is poorly calibrated (ECE {ece:.3f} > {rules['ece_review']})")
    weak = weak_classes(audit, rules)
    if weak:
        named = ", ".join(f"“{r['class']}” {percent(r['recall'])}" for r in weak[:3])
        more = f" and {len(weak) - 3} more" if len(weak) > 3 else ""
        out.append(
            f"{len(weak)} class{'es' if len(weak) != 1 else ''} "
            f"{'have' if len(weak) != 1 else 'has'} a recall below "
            f"{percent(rules['weak_class_recall'])} ({named}{more})"
        )
    if m.get("nonfinite_outputs") and not m.get("all_outputs_nonfinite"):
        out.append(f"{m['nonfinite_outputs']} outputs were NaN or infinite")
    if m.get("classes_without_images"):
        out.append(f"{len(m['classes_without_images'])} classes had no readable test image")
    return out


def _short(reasons: list[str]) -> list[str]:
    if len(reasons) <= MAX_REASONS:
        return reasons
    rest = len(reasons) - MAX_REASONS + 1
    return [*reasons[: MAX_REASONS - 1], f"{rest} more rules of this level fired (see findings)"]


def verdict(audit: dict[str, Any], rules: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"level": "pass" | "review" | "fail", "reasons": [...], "rules": {...}}`` for an
    ``audit.json``; ``rules`` are the ``[verdict]`` overrides (defaults when None)."""
    rules = verdict_rules(rules)
    fails = _fails(audit, rules)
    if fails:
        return {"level": "fail", "reasons": _short(fails), "rules": rules}
    reviews = _reviews(audit, rules)
    if reviews:
        return {"level": "review", "reasons": _short(reviews), "rules": rules}
    return {
        "level": "pass",
        "reasons": ["no rule for fail or review fired (see the trust checks for what was tested)"],
        "rules": rules,
    }
