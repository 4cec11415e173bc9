"""Shortcut scores: is a class's saliency on the object, or on something else?

The classic failure: a frog classifier that learned the green grass, not the frog. Per class we
measure where the saliency mass goes and flag the class as a suspected shortcut.

With object masks (the decision rule, per class, on class means):

- ``outside_fraction``: saliency mass outside the object (``1 -`` energy pointing game).
- ``lift``: mean energy inside the object divided by the mean object area. A uniform map has
  energy-inside equal to the object's area fraction, so ``lift = 1`` means "no more on the object
  than chance", ``lift = 4`` means the object is four times denser in saliency than the image.
- **flagged** when ``outside_fraction > OUTSIDE_THRESHOLD`` (0.5: most of the mass is off the
  object) **and** ``lift < LIFT_THRESHOLD`` (2.0: the object is not even twice as dense as the
  background). The lift condition keeps small objects fair: a coarse CAM blob centred on an object
  covering 5% of the image spills outside it, but still has a lift of 5-10.

Without masks (a weaker signal, used only when no masks exist):

- ``border_fraction``: saliency mass in the outer band of relative width ``border`` (0.15: that
  band is 51% of the image area, its ``border_share``).
- ``border_excess = (border_fraction - border_share) / (1 - border_share)``: 0 for a uniform map,
  1 when all mass is on the border, negative when it is central.
- **flagged** when the class-mean ``border_excess >= BORDER_EXCESS_THRESHOLD`` (0.5: the border
  holds at least half-way between a uniform map's share and all of the mass; for ``border=0.15``
  that is a border fraction >= 0.755).

Always reported, not used in the flag: ``location_agreement``, the mean pairwise Pearson
correlation between the class's maps (1: every map of the class lights up the same place, e.g. a
watermark in a corner; about 0 for maps that follow objects placed anywhere).

**Saliency share alone never decides.** A coarse CAM at a deep layer spreads over the whole
receptive field and puts most of its mass off the object for a model that provably uses the
object. So every class also gets ``level``: ``"inspect"`` (``candidate = True``) when the rule
above fires *or* ``location_agreement >= LOCATION_AGREEMENT_THRESHOLD`` (0.7: a cue class's
maps agreed at 0.81-0.93, other classes' at most 0.59), else ``"none"``. A candidate is a note
to look at, not a finding; the decision is an intervention's
(:mod:`~reporter.metrics.trust.interventions`). ``flagged`` keeps the saliency-only rule for the
code that still reads it; new code takes ``flagged`` from the interventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypedDict

import torch
import torch.nn.functional as F

from reporter.metrics.trust._common import as_maps
from reporter.metrics.trust.localization import energy_pointing_game

__all__ = [
    "BORDER_EXCESS_THRESHOLD",
    "LIFT_THRESHOLD",
    "LOCATION_AGREEMENT_THRESHOLD",
    "OUTSIDE_THRESHOLD",
    "ObjectScores",
    "ShortcutScores",
    "border_fraction",
    "border_share",
    "location_agreement",
    "outside_fraction",
    "shortcut_scores",
]

OUTSIDE_THRESHOLD = 0.5
"""Flag (with masks) needs the mean saliency fraction outside the object above this."""

LIFT_THRESHOLD = 2.0
"""Flag (with masks) needs the object's saliency density below this multiple of chance."""

BORDER_EXCESS_THRESHOLD = 0.5
"""Flag (without masks) when the mean border excess reaches this."""

LOCATION_AGREEMENT_THRESHOLD = 0.7
"""A class is an "inspect" candidate when its maps' location agreement reaches this."""


class ObjectScores(TypedDict, total=False):
    """The scores that need object masks (all present with masks, none without)."""

    energy_inside: float
    outside_fraction: float
    object_area: float
    lift: float


class ShortcutScores(ObjectScores):
    """One class's :func:`shortcut_scores` (see its Returns for the meaning of each key)."""

    n: int
    border_fraction: float
    border_share: float
    border_excess: float
    location_agreement: float
    basis: Literal["mask", "border"]
    evidence: list[int]
    flagged: bool
    candidate: bool
    level: Literal["inspect", "none"]


def _band(height: int, width: int, border: float, device: torch.device) -> torch.Tensor:
    if not 0.0 < border < 0.5:
        raise ValueError(f"border must be in (0, 0.5), got {border}")
    by = max(1, round(border * height))
    bx = max(1, round(border * width))
    band = torch.ones(height, width, dtype=torch.bool, device=device)
    band[by : height - by, bx : width - bx] = False
    return band


def border_share(height: int, width: int, border: float = 0.15) -> float:
    """Fraction of the image area in the border band (what a uniform map puts there)."""
    return float(_band(height, width, border, torch.device("cpu")).float().mean())


def border_fraction(saliency: torch.Tensor, border: float = 0.15) -> torch.Tensor:
    """Fraction of saliency mass in the outer band of relative width ``border``, per image.

    Args:
        saliency: ``[B, H, W]`` maps; negative values are clamped to 0.
        border: Band width as a fraction of the height and width (at least one pixel).

    Returns:
        ``[B]`` fractions; a map without mass scores :func:`border_share` (a uniform map).
    """
    sal = as_maps(saliency).clamp(min=0)
    band = _band(sal.shape[-2], sal.shape[-1], border, sal.device)
    total = sal.flatten(1).sum(dim=1)
    on_band = (sal * band).flatten(1).sum(dim=1)
    share = band.float().mean()
    return torch.where(total > 0, on_band / total.clamp(min=1e-30), share)


def outside_fraction(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fraction of saliency mass outside the object masks, per image (``1 -`` energy inside)."""
    return 1.0 - energy_pointing_game(saliency, masks)


def location_agreement(saliency: torch.Tensor, *, max_side: int = 32) -> float:
    """How consistently a set of maps (one class) lights up the same location.

    The mean Pearson correlation over all pairs of maps, computed in ``O(N)`` from the sum of the
    standardised maps. Maps are first average-pooled to at most ``max_side`` per side, so the value
    does not depend on the input resolution.

    Args:
        saliency: ``[N, H, W]`` maps of one class.
        max_side: Resolution at which maps are compared.

    Returns:
        A value in ``[-1, 1]``: 1 when every map is the same pattern, about 0 for maps at
        independent places. Constant maps count as uncorrelated; fewer than two maps give 0.
    """
    sal = as_maps(saliency).float()
    n = sal.shape[0]
    if n < 2:
        return 0.0
    h, w = sal.shape[-2:]
    if max(h, w) > max_side:
        size = (max(1, round(h * max_side / max(h, w))), max(1, round(w * max_side / max(h, w))))
        sal = F.adaptive_avg_pool2d(sal[:, None], size)[:, 0]
    z = sal.flatten(1).double()
    z = z - z.mean(dim=1, keepdim=True)
    norm = z.norm(dim=1, keepdim=True)
    z = torch.where(norm > 0, z / norm.clamp(min=1e-30), torch.zeros_like(z))
    total = z.sum(dim=0)
    pair_sum = (total @ total - (z * z).sum()) / 2
    return float((pair_sum / (n * (n - 1) / 2)).clamp(-1.0, 1.0))


def shortcut_scores(
    saliency: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    masks: torch.Tensor | None = None,
    *,
    border: float = 0.15,
    outside_threshold: float = OUTSIDE_THRESHOLD,
    lift_threshold: float = LIFT_THRESHOLD,
    border_excess_threshold: float = BORDER_EXCESS_THRESHOLD,
    agreement_threshold: float = LOCATION_AGREEMENT_THRESHOLD,
    evidence: int = 4,
) -> dict[str, ShortcutScores]:
    """Shortcut scores and flags per class.

    Args:
        saliency: ``[N, H, W]`` maps of the sample (one method and layer), at the masks' size
            when masks are given (other sizes are resized).
        labels: ``[N]`` class index of each image used for grouping (the true labels: a
            shortcut is about what a class's images have in common).
        class_names: Names in label order; classes without images are left out.
        masks: Optional ``[N, H, W]`` boolean object masks. When given, the flag uses the mask
            rule; otherwise the border rule (see the module docstring).
        border: Border band width for :func:`border_fraction`.
        outside_threshold: See :data:`OUTSIDE_THRESHOLD`.
        lift_threshold: See :data:`LIFT_THRESHOLD`.
        border_excess_threshold: See :data:`BORDER_EXCESS_THRESHOLD`.
        agreement_threshold: See :data:`LOCATION_AGREEMENT_THRESHOLD`.
        evidence: How many image indices to return per class as evidence.

    Returns:
        ``{class_name: scores}`` with ``n``, ``border_fraction``, ``border_share``,
        ``border_excess``, ``location_agreement``; with masks also ``energy_inside``,
        ``outside_fraction``, ``object_area`` and ``lift``; ``basis`` (``"mask"`` or
        ``"border"``), ``flagged`` (bool, the saliency-only rule), ``candidate`` (bool),
        ``level`` (``"inspect"`` or ``"none"``; see the module docstring) and ``evidence``
        (indices into the sample of the class's images with the most saliency off the object,
        or on the border, worst first).
    """
    sal = as_maps(saliency).float()
    labels = labels.reshape(-1).to(sal.device)
    if labels.shape[0] != sal.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {sal.shape[0]} maps")
    h, w = sal.shape[-2:]
    share = border_share(h, w, border)
    bfrac = border_fraction(sal, border)
    if masks is not None:
        masks = masks.bool().to(sal.device)
        outside = outside_fraction(sal, masks)
        area = masks.flatten(1).float().mean(dim=1)
    out: dict[str, ShortcutScores] = {}
    for index, name in enumerate(class_names):
        sel = torch.nonzero(labels == index).flatten()
        if sel.numel() == 0:
            continue
        bf = float(bfrac[sel].mean())
        excess = (bf - share) / (1.0 - share)
        agreement = location_agreement(sal[sel])
        on_object: ObjectScores = {}
        basis: Literal["mask", "border"]
        if masks is not None:
            off = outside[sel]
            inside_mean = 1.0 - float(off.mean())
            area_mean = float(area[sel].mean())
            lift = inside_mean / area_mean if area_mean > 0 else float("inf")
            flagged = (1.0 - inside_mean) > outside_threshold and lift < lift_threshold
            worst = off
            on_object = {
                "energy_inside": inside_mean,
                "outside_fraction": 1.0 - inside_mean,
                "object_area": area_mean,
                "lift": lift,
            }
            basis = "mask"
        else:
            flagged = excess >= border_excess_threshold
            worst = bfrac[sel]
            basis = "border"
        top = torch.argsort(worst, descending=True, stable=True)[:evidence]
        candidate = bool(flagged) or agreement >= agreement_threshold
        out[name] = {
            "n": int(sel.numel()),
            "border_fraction": bf,
            "border_share": share,
            "border_excess": excess,
            "location_agreement": agreement,
            **on_object,
            "basis": basis,
            "evidence": [int(i) for i in sel[top]],
            "flagged": bool(flagged),
            "candidate": candidate,
            "level": "inspect" if candidate else "none",
        }
    return out
