"""Hand-made audit bundles for the comparison tests: audit.json + artifacts/records.npz with
exactly the labels, predictions, confidences, hashes and maps a test asks for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def make_bundle(
    folder: Path,
    *,
    labels: list[int],
    preds: list[int],
    hashes: list[int] | None = None,
    confidence: list[float] | None = None,
    maps: np.ndarray | None = None,
    classes: tuple[str, ...] = ("cat", "dog"),
    methods: tuple[str, ...] = ("gradcam",),
    verdict: str = "pass",
    shortcut: dict[str, bool] | None = None,
    sanity: dict[str, str] | None = None,
    generated: str = "2026-01-01T00:00:00+00:00",
    schema_version: int = 2,
    findings: list[Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle a comparison can read; return its folder."""
    n = len(labels)
    lab, pr = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    conf = np.asarray(confidence if confidence is not None else [0.9] * n, np.float32)
    if maps is None:
        grid = np.arange(256, dtype=np.float32).reshape(16, 16) / 255
        maps = np.broadcast_to(grid, (n, len(methods), 16, 16)).copy()
    acc = float((lab == pr).mean())
    audit: dict[str, Any] = {
        "schema_version": schema_version,
        "generated": generated,
        "model": {"arch": "gapnet", "sha256": "ab" * 32},
        "dataset": {
            "name": "toy",
            "fingerprint": "f",
            "audited_images": n,
            "classes": list(classes),
        },
        "metrics": {"accuracy": acc, "ece": None},
        "explanations": {"methods": [{"name": m} for m in methods], "record_layer": "features"},
        "trust": {
            "sanity": {m: {"status": s} for m, s in (sanity or {}).items()},
            "shortcut": {c: {"flagged": f} for c, f in (shortcut or {}).items()},
        },
        "verdict": {"level": verdict, "reasons": [f"the verdict is {verdict}"]},
        "findings": findings if findings is not None else ["A finding."],
        **(extra or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    np.savez_compressed(
        folder / "artifacts" / "records.npz",
        index=np.arange(n, dtype=np.int64),
        label=lab,
        pred=pr,
        confidence=conf,
        finite=np.ones(n, bool),
        hash=np.asarray(hashes if hashes is not None else range(1000, 1000 + n), np.uint64),
        maps=np.asarray(maps, np.float16),
    )
    (folder / "audit.json").write_text(json.dumps(audit), encoding="utf-8")
    return folder
