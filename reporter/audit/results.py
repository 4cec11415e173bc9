"""Typed results handed from one stage to the next and, in the end, to the bundle.

Every stage returns one of these. A :class:`SectionResult` carries the part of ``audit.json``
the stage owns (``section``: numbers, names, indices; JSON-safe) and the arrays it hands to the
report (``arrays``: images, maps; written to ``artifacts/<group>.npz``). The report draws its
figures from those arrays and never recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reporter.bundle import Artifacts

__all__ = ["SectionResult", "uint8_images", "uint8_maps"]


@dataclass
class SectionResult:
    """What a stage adds to the bundle.

    Attributes:
        group: Name of its artifact file (``artifacts/<group>.npz``).
        section: Its part of ``audit.json``.
        arrays: Its arrays, by name.
    """

    group: str
    section: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def store(self, artifacts: Artifacts) -> None:
        """Put the arrays into the bundle's artifacts."""
        for name, arr in self.arrays.items():
            artifacts.put(self.group, name, arr)


def uint8_images(unit: Any) -> np.ndarray:
    """Images ``[N, C, H, W]`` in [0, 1] (C = 1 or 3; tensor or array) as ``[N, H, W, 3]``
    uint8, the form in which the bundle stores every picture."""
    arr = unit.detach().cpu().numpy() if hasattr(unit, "detach") else np.asarray(unit)
    if arr.ndim == 3:
        arr = arr[None]
    arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return (np.clip(np.nan_to_num(arr), 0, 1) * 255 + 0.5).astype(np.uint8)


def uint8_maps(maps: Any) -> np.ndarray:
    """Saliency maps in [0, 1] (tensor or array, any shape) quantised to uint8 for display."""
    arr = maps.detach().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    return (np.clip(np.nan_to_num(arr), 0, 1) * 255 + 0.5).astype(np.uint8)
