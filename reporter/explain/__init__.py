"""Class activation maps: every method for every requested layer from one forward/backward pass.

Public API:

- :class:`CamEngine`: context manager; ``engine(images, targets=None)`` returns a
  :class:`CamResult` whose ``maps[method][layer]`` are ``[B, h, w]`` CPU tensors.
- :data:`METHODS`: one :class:`~reporter.explain.registry.MethodSpec` per method name
  (``cam``, ``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``, ``hirescam``,
  ``eigencam``, ``scorecam``), with :func:`get_method` and :func:`method_title`.
- :func:`explain_batches`: maps for many images, upsampled and normalised.
- :func:`normalize_maps` and :func:`upsample_maps`: display helpers for the report code.

Modules: ``registry`` (the methods), ``methods`` (pure tensor math), ``mapmath`` (every map after
the backward pass), ``result`` (:class:`CamResult`, display helpers), ``engine``
(:class:`CamEngine`), ``batches``, ``scorecam``, ``targets``, ``graphs`` (CUDA graphs).
"""

from __future__ import annotations

from reporter.explain.batches import explain_batches
from reporter.explain.engine import CamEngine
from reporter.explain.registry import GRADIENT_METHODS, METHODS, get_method, method_title
from reporter.explain.result import CamResult, normalize_maps, tokens_to_grid, upsample_maps
from reporter.explain.targets import resolve_targets

__all__ = [
    "GRADIENT_METHODS",
    "METHODS",
    "CamEngine",
    "CamResult",
    "explain_batches",
    "get_method",
    "method_title",
    "normalize_maps",
    "resolve_targets",
    "tokens_to_grid",
    "upsample_maps",
]
