"""The model card's "Changes" section, from ``audit.json["changes"]`` (``--previous``)."""

from __future__ import annotations

from typing import Any

__all__ = ["changelog_markdown"]


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("<", "&lt;").replace(">", "&gt;")


def _statement(finding: Any) -> str:
    return str(finding.get("statement") if isinstance(finding, dict) else finding)


def changelog_markdown(audit: dict[str, Any]) -> list[str]:
    """Markdown lines: the changes since the last audit and the changelog, newest first.

    Empty when the audit was not run with ``--previous``.
    """
    changes = audit.get("changes")
    if not changes:
        return []
    prev = changes["previous"]
    lines = [
        "",
        "## Changes since the last audit",
        "",
        f"Compared with the audit of {prev['generated']} (report `{str(prev['report_id'])[:12]}`)"
        f" on {changes['compared']} shared images: **{changes['level']}**.",
        "",
    ]
    lines += [f"- {_md(_statement(f))}" for f in changes["findings"]
              if isinstance(f, dict) and f.get("severity") in ("high", "medium")]  # fmt: skip
    lines += ["", "## Changelog", "", "| date | report id | accuracy | ECE | verdict | changes |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for e in reversed(changes["changelog"]):
        acc = "n/a" if e.get("accuracy") is None else f"{e['accuracy']:.4f}"
        ece = "n/a" if e.get("ece") is None else f"{e['ece']:.4f}"
        rid = f"`{str(e['report_id'])[:12]}`" if e.get("report_id") else "this report"
        text = _md(e.get("changes") or "first audit in this log").replace("|", "\\|")
        lines.append(f"| {e.get('generated')} | {rid} | {acc} | {ece} | "
                     f"{e.get('verdict') or 'n/a'} | {text} |")  # fmt: skip
    return lines
