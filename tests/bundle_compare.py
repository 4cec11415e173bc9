"""Compare two bundles (audit.json and artifacts/) as the distributed tests need: numbers to a
relative tolerance, everything else exactly, the run-specific keys left out."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

IGNORED = (
    ("generated",),
    ("timings",),
    ("rendering",),
    ("environment", "world_size"),
    ("explanations", "seconds_per_image"),
    ("model", "training", "seconds"),
    ("signoff", "report_id"),  # a hash over everything else, the clocks included
)
"""Paths in audit.json that differ between runs by nature: clocks and the process count."""


def _close(a: float, b: float, rel: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel * 1e-3)


def json_differences(a: Any, b: Any, *, rel: float = 1e-6, path: tuple = ()) -> list[str]:
    """Where ``a`` and ``b`` differ: numbers beyond ``rel`` relative, anything else at all
    (types, keys, their order, list lengths and order, strings); :data:`IGNORED` is skipped."""
    if path in IGNORED:
        return []
    where = ".".join(str(p) for p in path) or "<root>"
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return [] if a is b else [f"{where}: {a!r} != {b!r}"]
    if isinstance(a, number) and isinstance(b, number):
        return [] if _close(float(a), float(b), rel) else [f"{where}: {a!r} != {b!r}"]
    if type(a) is not type(b):
        return [f"{where}: {type(a).__name__} != {type(b).__name__}"]
    if isinstance(a, dict):
        if list(a) != list(b):
            return [f"{where}: keys {list(a)} != {list(b)}"]
        return [d for k in a for d in json_differences(a[k], b[k], rel=rel, path=(*path, k))]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in json_differences(x, y, rel=rel, path=(*path, i))
        ]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def array_differences(a: np.ndarray, b: np.ndarray, where: str, *, rel: float = 1e-6) -> list[str]:
    """Floats to ``rel`` relative, integers and booleans exactly; shapes and dtypes exactly."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return [f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"]
    if np.issubdtype(a.dtype, np.floating):
        ok = np.isclose(a.astype(np.float64), b.astype(np.float64), rtol=rel, atol=rel * 1e-3,
                        equal_nan=True)  # fmt: skip
    else:
        ok = a == b
    if ok.all():
        return []
    bad = int((~ok).sum())
    return [f"{where}: {bad} of {a.size} values differ"]


def bundle_differences(old: str | Path, new: str | Path, *, rel: float = 1e-6) -> list[str]:
    """Every difference between two bundles' ``audit.json`` and ``artifacts/*.npz``."""
    old, new = Path(old), Path(new)
    out = json_differences(
        json.loads((old / "audit.json").read_text()),
        json.loads((new / "audit.json").read_text()),
        rel=rel,
    )
    names_a = sorted(p.name for p in (old / "artifacts").glob("*.npz"))
    names_b = sorted(p.name for p in (new / "artifacts").glob("*.npz"))
    if names_a != names_b:
        return [*out, f"artifacts: {names_a} != {names_b}"]
    for name in names_a:
        with np.load(old / "artifacts" / name) as za, np.load(new / "artifacts" / name) as zb:
            if sorted(za.files) != sorted(zb.files):
                out.append(f"{name}: {sorted(za.files)} != {sorted(zb.files)}")
                continue
            for key in za.files:
                out += array_differences(za[key], zb[key], f"{name}:{key}", rel=rel)
    return out
