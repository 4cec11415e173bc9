"""The trust stage's time budget: how many images each intervention gets on this model.

The trust checks are interventions, so their cost is forward passes: the randomization test
recomputes every map on a cascade of randomized models, deletion / insertion evaluates every
step of every curve, the region search pastes every candidate box into the other classes'
images. On a digits model that is seconds; on a resnet18 at 224 px on two CPU cores it is
minutes per check. The budget keeps the stage's time bounded by *measuring* the model's cost
on this machine and scaling the images of the three costly checks down together, never the
rules or the thresholds:

1. the stage times two things it needs anyway: the model's maps on the region images (seconds
   per image for one explanation pass) and its predictions on them (seconds per image for one
   forward pass);
2. :func:`check_costs` counts each check's passes per image from its settings (exact for
   deletion / insertion and the region search, whose distinct boxes are known before any
   forward pass; an upper bound for the randomization cascade);
3. :func:`plan_trust` scales the three image counts by one factor so that the estimate fits
   the seconds left, keeping each at least at its floor (:data:`FLOORS`): fewer images, wider
   intervals, the same tests.

What was planned, measured and reduced is kept in ``trust.budget`` of ``audit.json``; a
reduced plan is a finding, so a reader knows the intervals are wider than the defaults give.
``budget_seconds = 0`` turns the budget off (every configured count runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from reporter.bundle import TRUST_CHECKS

__all__ = [
    "CHECKS",
    "FLOORS",
    "SANITY_STEP_COST",
    "CheckCost",
    "TrustPlan",
    "check_costs",
    "plan_trust",
]

CHECKS = tuple(TRUST_CHECKS)
"""The checks whose images the budget scales (``[trust]`` keys ``sanity_images``,
``faithfulness_images``, ``region_images``; :data:`reporter.bundle.TRUST_CHECKS`)."""

SANITY_STEP_COST = 2.0
"""An explanation pass of the randomization test costs about this many explanation passes of
the trained model: every step is a model with fresh weights (the CPU backend re-lays out new
weights on their first use) and its maps are compared with the trained model's (ranks and SSIM
at input size). Measured 1.5-2.5 on a resnet18 at 64 and 224 px, 8 and 24 images."""

FLOORS = {"sanity": 8, "faithfulness": 8, "region": 32}
"""The fewest images a check is reduced to (or its configured count, when smaller). The
region search needs several images of every class; its floor is also at least four per class
(see :func:`plan_trust`)."""


@dataclass(frozen=True)
class CheckCost:
    """One check's cost per image, in units of the two measured costs.

    Attributes:
        explain: Explanation passes per image (maps of every method and layer).
        forward: Forward passes per image (no gradient).
    """

    explain: float
    forward: float

    def seconds(self, images: int, explain_s: float, forward_s: float) -> float:
        """Estimated seconds for ``images`` images."""
        return images * (self.explain * explain_s + self.forward * forward_s)


def check_costs(
    *,
    methods: int,
    sanity_seeds: int,
    cascade_steps: int,
    baselines: int,
    tie_orders: int,
    random_maps: int,
    curve_steps: int,
    region_passes_per_image: float,
) -> dict[str, CheckCost]:
    """Passes per image of each check.

    - ``sanity``: the original maps and, per seed, the maps at each recomputed cascade step
      (``1 + seeds * cascade_steps`` explanation passes, each :data:`SANITY_STEP_COST` times
      an ordinary one; an upper bound when the model has fewer layers than steps).
    - ``faithfulness``: per baseline, deletion and insertion of each method's map (times the
      tie orders) and of each random map, ``2 * steps`` distinct images per curve pair (the
      end points are shared); the average drop (two passes per method) and the fully removed
      images (the intact image and one per baseline).
    - ``region``: ``region_passes_per_image`` forward passes
      (:func:`reporter.metrics.trust.search_forward_passes` over the images); its maps and the
      predictions on the intact images are made before the plan (they are its measurements),
      so they are spent, not planned.
    """
    faithfulness = (
        baselines * (methods * tie_orders + random_maps) * 2 * curve_steps
        + 2 * methods
        + 1
        + baselines
    )
    return {
        "sanity": CheckCost(
            explain=SANITY_STEP_COST * (1 + sanity_seeds * cascade_steps), forward=0
        ),
        "faithfulness": CheckCost(explain=0, forward=faithfulness),
        "region": CheckCost(explain=0, forward=region_passes_per_image),
    }


@dataclass
class TrustPlan:
    """The trust stage's plan: images per check and why.

    Attributes:
        budget_seconds: The budget (0: none).
        explain_ms: Measured milliseconds of one explanation pass, per image.
        forward_ms: Measured milliseconds of one forward pass, per image.
        spent_seconds: Seconds of the stage spent before the plan (the sample's maps and the
            two measurements).
        requested: Images per check as configured (capped by the sample).
        images: Images per check that run.
        estimated_seconds: Estimate per check at ``requested``.
        planned_seconds: Estimate per check at ``images``.
        scale: The factor applied to ``requested`` (1.0: nothing reduced).
    """

    budget_seconds: float
    explain_ms: float
    forward_ms: float
    spent_seconds: float
    requested: dict[str, int]
    images: dict[str, int]
    estimated_seconds: dict[str, float] = field(default_factory=dict)
    planned_seconds: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0

    @property
    def reduced(self) -> bool:
        """Whether any check runs on fewer images than configured."""
        return any(self.images[c] < self.requested[c] for c in self.requested)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``trust.budget`` in ``audit.json``). What the clock measured is under
        ``measured`` (it differs from run to run, like ``timings``)."""
        return {
            "budget_seconds": self.budget_seconds,
            "requested": dict(self.requested),
            "images": dict(self.images),
            "reduced": self.reduced,
            "measured": {
                "explain_ms": round(self.explain_ms, 3),
                "forward_ms": round(self.forward_ms, 3),
                "spent_seconds": round(self.spent_seconds, 3),
                "estimated_seconds": {k: round(v, 1) for k, v in self.estimated_seconds.items()},
                "planned_seconds": {k: round(v, 1) for k, v in self.planned_seconds.items()},
                "scale": round(self.scale, 4),
            },
        }


def plan_trust(
    budget_seconds: float,
    requested: dict[str, int],
    costs: dict[str, CheckCost],
    *,
    explain_s: float,
    forward_s: float,
    spent_seconds: float = 0.0,
    classes: int = 1,
) -> TrustPlan:
    """Images per check so that the estimated time fits ``budget_seconds - spent_seconds``.

    Every check's count is multiplied by the same factor ``f = left / estimate`` (rounded
    down, never below its floor: ``min(requested, FLOORS[check])``, and for the region search
    at least four images per class) when the estimate at the requested counts exceeds what is
    left; a budget of 0 keeps every count. With floors the plan can exceed the budget: the
    floors are what a check needs to say anything.

    Args:
        budget_seconds: The ``[trust] budget_seconds`` (0: no budget).
        requested: ``{check: images}`` for the checks of :data:`CHECKS` that run.
        costs: :func:`check_costs`.
        explain_s: Seconds of one explanation pass per image (measured).
        forward_s: Seconds of one forward pass per image (measured).
        spent_seconds: Seconds of the stage already spent.
        classes: Number of classes (the region search's floor).

    Returns:
        A :class:`TrustPlan`.
    """

    def estimate(counts: dict[str, int]) -> dict[str, float]:
        return {c: costs[c].seconds(n, explain_s, forward_s) for c, n in counts.items()}

    full = estimate(requested)
    images = dict(requested)
    scale = 1.0
    left = budget_seconds - spent_seconds
    total = sum(full.values())
    if budget_seconds > 0 and total > left:
        scale = max(0.0, left) / total
        for check, n in requested.items():
            floor = FLOORS[check] if check != "region" else max(FLOORS[check], 4 * classes)
            images[check] = max(min(n, floor), math.floor(n * scale))
    return TrustPlan(
        budget_seconds=float(budget_seconds),
        explain_ms=1000 * explain_s,
        forward_ms=1000 * forward_s,
        spent_seconds=spent_seconds,
        requested=dict(requested),
        images=images,
        estimated_seconds=full,
        planned_seconds=estimate(images),
        scale=scale,
    )
