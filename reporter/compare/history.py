"""The trend of many audits: accuracy, ECE, verdict and drift in date order (``history.json``)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from reporter.bundle import AUDIT_FILE
from reporter.compare.diff import compare_bundles
from reporter.compare.load import Bundle, load_bundle
from reporter.errors import ReporterError

__all__ = ["bundle_folders", "history"]


def bundle_folders(args: list[str]) -> list[Path]:
    """The bundle folders named by ``args``: folders, glob patterns (``reports/2026-*``), or a
    folder whose sub-folders are bundles. Duplicates are dropped, order kept."""
    found: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir() and not (path / AUDIT_FILE).is_file():
            subs = sorted(p for p in path.iterdir() if (p / AUDIT_FILE).is_file())
            if not subs:
                raise ReporterError(f"{arg} is not an audit bundle and holds none.")
            found += subs
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(arg))
            if not matches:
                raise ReporterError(f"{arg}: no such folder (and no folder matches it).")
            found += [p for p in matches if p.is_dir()]
    return list(dict.fromkeys(p.resolve() for p in found))


def _row(b: Bundle, previous: Bundle | None) -> dict[str, Any]:
    m = b.audit["metrics"]
    row: dict[str, Any] = {
        "path": str(b.path),
        "name": b.name,
        "generated": b.generated,
        "date": b.generated[:10],
        "report_id": b.report_id,
        "model_sha256": (b.audit.get("model") or {}).get("sha256"),
        "images": len(b.records["hash"]),
        "accuracy": m.get("accuracy"),
        "ece": m.get("ece"),
        "verdict": (b.audit.get("verdict") or {}).get("level"),
        "drift": None,
        "drift_method": None,
        "shared": None,
    }
    if previous is not None:
        c, _ = compare_bundles(previous, b, reps=0)
        row.update(drift=c["drift"]["value"], drift_method=c["drift"]["method"],
                   shared=c["matching"]["compared"])  # fmt: skip
    return row


def history(folders: list[Path]) -> dict[str, Any]:
    """``history.json``: one row per readable bundle, in date order; the others are listed in
    ``skipped`` with the reason.

    Raises:
        ReporterError: when no folder holds a readable bundle.
    """
    bundles: list[Bundle] = []
    skipped = []
    for folder in folders:
        try:
            bundles.append(load_bundle(folder))
        except ReporterError as exc:
            skipped.append({"path": str(folder), "reason": str(exc)})
    if not bundles:
        reasons = "; ".join(s["reason"] for s in skipped[:2])
        raise ReporterError(f"No readable audit bundle among the folders given ({reasons}).")
    bundles.sort(key=lambda b: (b.generated, str(b.path)))
    rows = [_row(b, bundles[i - 1] if i else None) for i, b in enumerate(bundles)]
    return {
        "rows": rows,
        "first": rows[0]["date"],
        "last": rows[-1]["date"],
        "skipped": skipped,
    }
