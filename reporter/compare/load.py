"""Read an audit bundle for a comparison: ``audit.json`` and ``artifacts/records.npz``.

A comparison reads bundles of *other* reporter versions too (last month's audit against
tonight's), so, unlike :func:`reporter.bundle.read_bundle`, any schema version from 2 (the
first with per-image records) up to :data:`MAX_SCHEMA` is accepted. Findings may be sentences
(version 2) or records (version 3); :func:`finding_text` reads both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reporter.bundle import ARTIFACTS_DIR, AUDIT_FILE, SCHEMA_VERSION
from reporter.errors import ReporterError

__all__ = [
    "MAX_SCHEMA",
    "MIN_SCHEMA",
    "RECORD_ARRAYS",
    "Bundle",
    "bundle_from_audit",
    "finding_text",
    "load_bundle",
    "report_id",
]

MIN_SCHEMA = 2
"""The oldest ``audit.json`` version a comparison reads (the first with ``records.npz``)."""

MAX_SCHEMA = max(SCHEMA_VERSION, 3)
"""The newest version a comparison reads: version 3 changed ``findings`` to records and added
``signoff``, both of which a comparison reads."""

RECORD_ARRAYS = ("index", "label", "pred", "confidence", "finite", "hash")
"""The arrays of ``records.npz`` a comparison needs (``maps`` is optional)."""


@dataclass
class Bundle:
    """One audit, as a comparison sees it.

    Attributes:
        path: The bundle folder (``None`` for an audit still in memory).
        audit: ``audit.json`` as a dict.
        records: The per-image arrays of ``records.npz`` (``maps`` may be missing).
        report_id: ``signoff.report_id`` when the audit has one, else the SHA-256 of the
            ``audit.json`` bytes.
    """

    path: Path | None
    audit: dict[str, Any]
    records: dict[str, np.ndarray] = field(default_factory=dict)
    report_id: str | None = None

    @property
    def classes(self) -> list[str]:
        """Class names, in label order."""
        return [str(c) for c in (self.audit.get("dataset") or {}).get("classes") or []]

    @property
    def methods(self) -> list[str]:
        """Methods whose maps ``records["maps"]`` holds, in its order."""
        table = (self.audit.get("explanations") or {}).get("methods") or []
        return [m["name"] if isinstance(m, dict) else str(m) for m in table]

    @property
    def generated(self) -> str:
        """The audit's date (ISO 8601), or an empty string."""
        return str(self.audit.get("generated") or "")

    @property
    def name(self) -> str:
        """A short name for messages: the folder's name, or the date."""
        return self.path.name if self.path is not None else self.generated or "this audit"


def report_id(audit: dict[str, Any], raw: bytes | None) -> str | None:
    """``signoff.report_id`` when present, else the SHA-256 of ``raw`` (the audit.json bytes)."""
    signoff = audit.get("signoff")
    if isinstance(signoff, dict) and signoff.get("report_id"):
        return str(signoff["report_id"])
    return hashlib.sha256(raw).hexdigest() if raw is not None else None


def finding_text(finding: Any) -> str:
    """The sentence of a finding: a string (schema 2) or a record's ``statement`` (schema 3)."""
    if isinstance(finding, dict):
        return str(finding.get("statement") or "")
    return str(finding)


def _check_records(records: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    missing = [k for k in RECORD_ARRAYS if k not in records]
    if missing:
        raise ReporterError(
            f"{where} lacks the per-image records ({', '.join(missing)}); it was written by a "
            "reporter older than schema version 2. Run that audit again to compare it."
        )
    n = len(records["hash"])
    bad = [k for k in (*RECORD_ARRAYS, "maps") if k in records and len(records[k]) != n]
    if bad:
        raise ReporterError(
            f"{where}: the per-image arrays have different lengths ({', '.join(bad)}); the "
            "bundle is damaged. Run the audit again."
        )
    return records


def bundle_from_audit(
    audit: dict[str, Any], records: dict[str, np.ndarray], path: Path | None = None
) -> Bundle:
    """A :class:`Bundle` for an audit held in memory (``reporter audit --previous``)."""
    where = str(path) if path is not None else "the new audit"
    return Bundle(path, audit, _check_records(dict(records), where), report_id(audit, None))


def load_bundle(folder: str | Path) -> Bundle:
    """Read the bundle in ``folder`` (eagerly: the folder may be replaced afterwards).

    Raises:
        ReporterError: ``folder`` holds no ``audit.json``, the file is not an audit, its
            schema version is outside ``MIN_SCHEMA .. MAX_SCHEMA``, or its records are
            missing or damaged. The message is one line and says what to do.
    """
    folder = Path(folder)
    path = folder / AUDIT_FILE
    if not path.is_file():
        raise ReporterError(
            f"{folder} is not an audit bundle: it has no {AUDIT_FILE}. Give the --out folder of "
            "a `reporter audit` run."
        )
    try:
        raw = path.read_bytes()
        audit = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReporterError(f"Cannot read {path}: {exc}.") from exc
    if not isinstance(audit, dict):
        raise ReporterError(f"{path} does not hold an audit (its top level is not an object).")
    version = audit.get("schema_version")
    if not isinstance(version, int) or not MIN_SCHEMA <= version <= MAX_SCHEMA:
        raise ReporterError(
            f"{path} has schema_version {version!r}; comparisons read versions {MIN_SCHEMA} to "
            f"{MAX_SCHEMA}. "
            + (
                "Run that audit again with this reporter."
                if not isinstance(version, int) or version < MIN_SCHEMA
                else "Compare with the reporter version that wrote it."
            )
        )
    for key in ("metrics", "dataset"):
        if not isinstance(audit.get(key), dict):
            raise ReporterError(f"{path} has no {key!r} section; the bundle is damaged.")
    npz = folder / ARTIFACTS_DIR / "records.npz"
    if not npz.is_file():
        raise ReporterError(
            f"{folder} has no {ARTIFACTS_DIR}/records.npz (the per-image records a comparison "
            "needs); copy the whole bundle folder, or run the audit again."
        )
    try:
        with np.load(npz, allow_pickle=False) as data:
            records = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise ReporterError(f"Cannot read {npz}: {exc}. The bundle is damaged.") from exc
    return Bundle(folder, audit, _check_records(records, str(npz)), report_id(audit, raw))
