"""``audit.json["changes"]``: what changed since the previous audit (``reporter audit
--previous DIR``), and the model card's changelog, carried from one audit to the next.

The changelog lives in ``audit.json`` (so the card is rendered from the bundle alone, like
everything else): each audit copies the previous audit's entries, fills in the previous
entry's report id (known only once that audit was written), and appends its own entry.
A card refreshed every night thus keeps its whole history.
"""

from __future__ import annotations

from typing import Any

from reporter.compare.diff import compare_bundles
from reporter.compare.findings import comparison_findings, comparison_level, pct, points
from reporter.compare.load import Bundle

__all__ = ["change_summary", "changelog_entry", "changes_section"]


def change_summary(c: dict[str, Any]) -> str:
    """One sentence with the main deltas of a comparison (for the changelog)."""
    a, e, d, v = c["metrics"]["accuracy"], c["metrics"]["ece"], c["drift"], c["verdict"]
    parts = []
    if a["delta"] is not None:
        p = a["mcnemar"]["p"]
        parts.append(
            f"accuracy {pct(a['old'])} \u2192 {pct(a['new'])} ({points(a['delta'])}, "
            + ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")
            + ")"
        )
    if e["delta"] is not None:
        parts.append(f"ECE {e['old']:.3f} \u2192 {e['new']:.3f}")
    if d["value"] is not None:
        parts.append(f"drift {d['value']:.2f} ({d['method']})")
    if v["old"] or v["new"]:
        parts.append(f"verdict {v['old'] or 'n/a'} \u2192 {v['new'] or 'n/a'}")
    parts.append(f"{c['matching']['compared']} shared images")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def changelog_entry(b: Bundle, summary: str | None, report_id: str | None) -> dict[str, Any]:
    """A changelog entry for the audit ``b``."""
    m = b.audit["metrics"]
    return {
        "generated": b.generated,
        "report_id": report_id,
        "accuracy": m.get("accuracy"),
        "ece": m.get("ece"),
        "verdict": (b.audit.get("verdict") or {}).get("level"),
        "changes": summary,
    }


def changes_section(previous: Bundle, current: Bundle, *, seed: int = 0) -> dict[str, Any]:
    """``audit.json["changes"]`` of ``current``, compared with ``previous``."""
    c, _ = compare_bundles(previous, current, seed=seed)
    findings = comparison_findings(c)
    summary = change_summary(c)
    log = [dict(e) for e in ((previous.audit.get("changes") or {}).get("changelog") or [])
           if isinstance(e, dict)]  # fmt: skip
    if log and log[-1].get("generated") == previous.generated:
        log[-1]["report_id"] = log[-1].get("report_id") or previous.report_id
    else:
        log.append(changelog_entry(previous, None, previous.report_id))
    log.append(changelog_entry(current, summary, None))
    return {
        "previous": {
            "path": str(previous.path) if previous.path is not None else None,
            "report_id": previous.report_id,
            "generated": previous.generated,
        },
        "level": comparison_level(findings),
        "summary": summary,
        "compared": c["matching"]["compared"],
        "accuracy": {k: c["metrics"]["accuracy"][k] for k in ("old", "new", "delta", "interval")}
        | {"p": c["metrics"]["accuracy"]["mcnemar"]["p"]},
        "ece": {k: c["metrics"]["ece"][k] for k in ("old", "new", "delta", "interval")},
        "drift": {"value": c["drift"]["value"], "method": c["drift"]["method"]},
        "verdict": {"old": c["verdict"]["old"], "new": c["verdict"]["new"]},
        "findings": findings,
        "changelog": log,
    }
