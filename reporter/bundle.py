"""The audit bundle on disk: ``audit.json`` (every number) and ``artifacts/`` (every array).

A bundle is what ``reporter audit --out DIR`` leaves beside the reports, and all that
``reporter render DIR`` needs to draw them again: no model, no data, no autograd. Arrays are
grouped by stage and stored as compressed ``.npz`` files (``artifacts/<group>.npz``); they are
read with ``allow_pickle=False``, so a bundle from someone else cannot run code.

This module is the only one that knows the file names and the schema version; it imports
neither torch nor any stage, so the report, the stages and ``reporter compare`` can all use it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reporter.errors import ReporterError

__all__ = [
    "ARTIFACTS_DIR",
    "AUDIT_FILE",
    "REPORT_ID_EXCLUDES",
    "SCHEMA_VERSION",
    "TRUST_CHECKS",
    "Artifacts",
    "clean_json",
    "read_bundle",
    "report_id",
    "to_json",
    "write_bundle",
]

SCHEMA_VERSION = 3
"""Version of ``audit.json`` and ``artifacts/``; docs/bundle.rst lists the changes."""

REPORT_ID_EXCLUDES = ("timings", "rendering", "artifacts", "signoff.report_id")

TRUST_CHECKS = {
    "sanity": "randomization test",
    "faithfulness": "deletion / insertion",
    "region": "region search",
}
"""The trust checks whose image counts ``audit.json`` records (``trust.budget.images``;
``trust.sanity_images``, ``trust.faithfulness.images``, ``trust.shortcut_rules.region_images``)
and how sentences name them."""
"""Keys of ``audit.json`` left out of the report id: the stage timings (they differ between two
runs of the same audit), what is written after the id is computed (``rendering``, the
``artifacts`` manifest) and the id itself."""

AUDIT_FILE = "audit.json"
ARTIFACTS_DIR = "artifacts"


def clean_json(value: Any) -> Any:
    """Make a value strict-JSON safe (NaN and infinities become ``null``; numpy scalars and
    tuples become plain Python values)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, np.generic):
        return clean_json(value.item())
    return value


def to_json(audit: Mapping[str, Any]) -> str:
    """``audit.json`` text: strict JSON (no NaN), UTF-8, indented."""
    return json.dumps(clean_json(audit), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def report_id(audit: Mapping[str, Any]) -> str:
    """The report id: SHA-256 of the canonical ``audit.json`` without the
    :data:`REPORT_ID_EXCLUDES` keys.

    Canonical means strict JSON (:func:`clean_json`) with sorted keys, no whitespace and UTF-8,
    so the id computed before ``audit.json`` is written equals the one recomputed from the file:
    ``report_id(read_bundle(folder)[0]) == audit["signoff"]["report_id"]`` verifies a bundle.
    """
    data = clean_json(audit)
    for key in REPORT_ID_EXCLUDES:
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Artifacts:
    """Named groups of numpy arrays: ``artifacts/<group>.npz`` in a bundle.

    Stages ``put`` arrays while they run; the report ``get``\\ s them back. A group read from
    disk is loaded lazily, on first access.
    """

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, np.ndarray]] = {}
        self._files: dict[str, Path] = {}

    def put(self, group: str, name: str, array: np.ndarray) -> None:
        """Store ``array`` as ``name`` in ``group`` (replacing an earlier one)."""
        arr = np.asarray(array)
        if arr.dtype == object:
            raise TypeError(f"artifact {group}/{name}: object arrays cannot be stored")
        self._load(group)[name] = arr

    def get(self, group: str, name: str) -> np.ndarray | None:
        """The array ``name`` of ``group``, or None when the bundle has none."""
        return self._load(group).get(name)

    def group(self, group: str) -> dict[str, np.ndarray]:
        """All arrays of ``group`` (empty when there are none)."""
        return dict(self._load(group))

    def groups(self) -> list[str]:
        """Names of the groups that hold arrays."""
        return sorted(set(self._groups) | set(self._files))

    def __iter__(self) -> Iterator[tuple[str, str, np.ndarray]]:
        for group in self.groups():
            for name, arr in self._load(group).items():
                yield group, name, arr

    def nbytes(self) -> int:
        """Uncompressed size of every array."""
        return sum(arr.nbytes for _, _, arr in self)

    def _load(self, group: str) -> dict[str, np.ndarray]:
        if group not in self._groups:
            path = self._files.get(group)
            arrays: dict[str, np.ndarray] = {}
            if path is not None:
                try:
                    with np.load(path, allow_pickle=False) as npz:
                        arrays = {name: npz[name] for name in npz.files}
                except (OSError, ValueError) as exc:
                    raise ReporterError(
                        f"Cannot read {path}: {exc}. The bundle is damaged; run the audit again."
                    ) from exc
            self._groups[group] = arrays
        return self._groups[group]

    def write(self, folder: Path) -> list[dict[str, Any]]:
        """Write every group as ``folder/<group>.npz``; return a manifest (file, arrays,
        bytes, sha256) sorted by file name."""
        folder.mkdir(parents=True, exist_ok=True)
        manifest = []
        for group in self.groups():
            arrays = self._load(group)
            if not arrays:
                continue
            path = folder / f"{group}.npz"
            with path.open("wb") as fh:
                # allow_pickle named (its default) so that no array name can ever fill it
                np.savez_compressed(fh, allow_pickle=True, **{k: arrays[k] for k in sorted(arrays)})
            data = path.read_bytes()
            manifest.append(
                {
                    "file": f"{ARTIFACTS_DIR}/{path.name}",
                    "arrays": len(arrays),
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        return manifest

    @classmethod
    def open(cls, folder: Path) -> Artifacts:
        """The artifacts of a bundle folder (``DIR/artifacts``), read lazily."""
        out = cls()
        if folder.is_dir():
            for path in sorted(folder.glob("*.npz")):
                out._files[path.stem] = path
        return out


def write_bundle(folder: Path, audit: dict[str, Any], artifacts: Artifacts) -> dict[str, Path]:
    """Write ``audit.json`` and ``artifacts/`` into ``folder``.

    The artifact manifest (file, size, checksum) is recorded in ``audit["artifacts"]`` before
    ``audit.json`` is written, so the JSON describes exactly the files beside it.
    """
    audit["artifacts"] = artifacts.write(folder / ARTIFACTS_DIR)
    path = folder / AUDIT_FILE
    path.write_text(to_json(audit), encoding="utf-8")
    return {"json": path, "artifacts": folder / ARTIFACTS_DIR}


def read_bundle(folder: str | Path) -> tuple[dict[str, Any], Artifacts]:
    """Read a bundle written by ``reporter audit``: ``(audit, artifacts)``.

    Raises:
        ReporterError: when ``folder`` holds no ``audit.json``, when it is not valid JSON, or
            when it was written by another schema version.
    """
    folder = Path(folder)
    path = folder / AUDIT_FILE
    if not path.is_file():
        raise ReporterError(
            f"{folder} is not an audit bundle: it has no {AUDIT_FILE}. Give the --out folder of "
            "a `reporter audit` run."
        )
    try:
        audit = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReporterError(f"Cannot read {path}: {exc}.") from exc
    if not isinstance(audit, dict):
        raise ReporterError(f"{path} does not hold an audit (its top level is not an object).")
    version = audit.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReporterError(
            f"{path} has schema_version {version!r}; this reporter reads version "
            f"{SCHEMA_VERSION}. "
            + (
                "Run the audit again with this version to get a bundle it can render."
                if isinstance(version, int) and version < SCHEMA_VERSION
                else "Render it with the reporter version that wrote it."
            )
        )
    for entry in audit.get("artifacts") or []:
        file = folder / str(entry.get("file", ""))
        if not file.is_file():
            raise ReporterError(
                f"{file} is listed in {AUDIT_FILE} but missing; the bundle is incomplete. Copy "
                "the whole folder, or run the audit again."
            )
    return audit, Artifacts.open(folder / ARTIFACTS_DIR)
