"""Compare two audit bundles: what changed between model versions (pure numpy and JSON).

``reporter compare OLD NEW`` and ``reporter audit --previous DIR`` both use
:func:`compare` on two :class:`Bundle` objects; the report layer renders its result
(:mod:`reporter.report.compare`). Nothing here imports torch, a model or a dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reporter.compare.diff import COMPARE_VERSION, compare_bundles
from reporter.compare.findings import comparison_findings, comparison_level
from reporter.compare.gates import Gate, evaluate_gates, parse_gates
from reporter.compare.load import Bundle, bundle_from_audit, finding_text, load_bundle

__all__ = [
    "COMPARE_VERSION",
    "Bundle",
    "Gate",
    "bundle_from_audit",
    "compare",
    "evaluate_gates",
    "finding_text",
    "load_bundle",
    "parse_gates",
]


def compare(
    old: Bundle,
    new: Bundle,
    *,
    gates: list[Gate] | None = None,
    seed: int = 0,
    reps: int = 1000,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The whole comparison: numbers, findings, level and gate results (``compare.json``),
    and the arrays of the most-moved images."""
    result, arrays = compare_bundles(old, new, seed=seed, reps=reps)
    result["findings"] = comparison_findings(result)
    result["level"] = comparison_level(result["findings"])
    result["gates"] = evaluate_gates(result, gates or [])
    return result, arrays
