"""``--precision``: the stream pass's forward and backward under autocast, checked against fp32.

bf16 and fp16 make the pass faster on a GPU, but a map computed in low precision can differ
from the fp32 map (small gradients underflow, a softmax saturates). So the first batch is
computed both ways and every map compared per image (Pearson correlation); when any falls
below :data:`MIN_PEARSON` the run warns and goes on in fp32. What was asked, what ran and the
lowest correlation are recorded in ``audit.json`` (``environment.precision``,
``precision_requested``, ``precision_check_min_pearson``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from reporter.explain import CamEngine, CamResult

__all__ = ["DTYPES", "MIN_PEARSON", "PRECISIONS", "PrecisionGuard", "map_pearson", "min_pearson"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIN_PEARSON = 0.99
"""Lowest per-image correlation of a low-precision map with its fp32 map that is accepted."""


def map_pearson(reference: Tensor, other: Tensor) -> Tensor:
    """Pearson correlation of each pair of maps ``[B, h, w]`` (``[B]``, float64).

    Two constant maps correlate 1 when equal and 0 otherwise; a map holding NaN/inf where
    the other does not correlates 0.
    """
    a = reference.detach().double().flatten(1).cpu()
    b = other.detach().double().flatten(1).cpu()
    finite_a, finite_b = torch.isfinite(a).all(1), torch.isfinite(b).all(1)
    a, b = torch.nan_to_num(a), torch.nan_to_num(b)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    r = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    flat = (na == 0) | (nb == 0)
    same = ((na == 0) & (nb == 0)) & (reference.flatten(1).cpu() == other.flatten(1).cpu()).all(1)
    r = torch.where(flat, same.double(), r)
    return torch.where(finite_a == finite_b, r, torch.zeros_like(r))


def min_pearson(reference: CamResult, other: CamResult) -> float:
    """The lowest per-image correlation over every method and layer of two engine results."""
    lows = [
        float(map_pearson(reference.maps[m][layer], other.maps[m][layer]).min())
        for m in reference.maps
        for layer in reference.maps[m]
    ]
    return min(lows) if lows else 1.0


class PrecisionGuard:
    """Runs the engine at ``--precision``, after checking the first batch against fp32.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16``.
        device: Where the engine computes (autocast's device type).
    """

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.requested = precision
        self.used = precision
        self.device_type = torch.device(device).type
        self.checked: float | None = None

    def low(self, engine: CamEngine, images: Tensor) -> CamResult:
        """The engine's result under autocast."""
        with torch.autocast(self.device_type, dtype=DTYPES[self.used], cache_enabled=False):
            return engine(images)

    def accept(self, correlation: float) -> bool:
        """Record the first batch's check; ``False`` (and fp32 from now on) below the bar."""
        self.checked = correlation
        if correlation >= MIN_PEARSON:
            return True
        log.warning(
            "--precision %s changed the maps of the first batch (lowest correlation with fp32 "
            "%.4f < %.2f); the pass runs in fp32.",
            self.requested,
            correlation,
            MIN_PEARSON,
        )
        self.used = "fp32"
        return False

    def calibrate(self, engine: CamEngine, images: Tensor) -> None:
        """Check ``images`` (the first batch of the audit) in fp32 and at the precision asked.

        Every process of a distributed run checks the same first batch, so all of them take
        the same decision, the one a single process takes.
        """
        if self.used == "fp32" or self.checked is not None:
            return
        self.accept(min_pearson(engine(images), self.low(engine, images)))

    def __call__(self, engine: CamEngine, images: Tensor) -> CamResult:
        """One batch through ``engine`` at the precision in use (checked first if
        :meth:`calibrate` was not called)."""
        self.calibrate(engine, images)
        if self.used == "fp32":
            return engine(images)
        return self.low(engine, images)

    def summary(self) -> dict[str, Any]:
        """For ``audit.json``: requested, used, the first batch's lowest correlation, the bar."""
        return {
            "requested": self.requested,
            "used": self.used,
            "first_batch_min_pearson": self.checked,
            "min_pearson": MIN_PEARSON,
        }
