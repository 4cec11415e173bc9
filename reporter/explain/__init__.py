"""Class activation maps: every method for every requested layer from one forward/backward pass.

Public API:

- :class:`CamEngine`: context manager; ``engine(images, targets=None)`` returns a
  :class:`CamResult` whose ``maps[method][layer]`` are ``[B, h, w]`` CPU tensors.
- :data:`METHODS`: the method names (``cam``, ``gradcam``, ``gradcam++``, ``xgradcam``,
  ``layercam``, ``hirescam``, ``eigencam``, ``scorecam``).
- :func:`normalize_maps` and :func:`upsample_maps`: display helpers for the report code.
"""

from __future__ import annotations

from reporter.explain.engine import (
    CamEngine,
    CamResult,
    explain_batches,
    normalize_maps,
    tokens_to_grid,
    upsample_maps,
)
from reporter.explain.methods import GRADIENT_METHODS, METHODS
from reporter.explain.targets import resolve_targets

__all__ = [
    "GRADIENT_METHODS",
    "METHODS",
    "CamEngine",
    "CamResult",
    "explain_batches",
    "normalize_maps",
    "resolve_targets",
    "tokens_to_grid",
    "upsample_maps",
]
