"""Trust metrics: can the explanations be believed?

Pure, batched tensor code (no hooks, I/O or printing); the pipeline computes the maps and calls:

- :mod:`~reporter.metrics.trust.sanity`: model-parameter randomization (Adebayo et al. 2018).
- :mod:`~reporter.metrics.trust.faithfulness`: deletion / insertion (Petsiuk et al. 2018) and
  average drop / increase (Chattopadhay et al. 2018).
- :mod:`~reporter.metrics.trust.localization`: pointing game and energy-based pointing game.
- :mod:`~reporter.metrics.trust.shortcut`: per-class shortcut scores and flags.
- :mod:`~reporter.metrics.trust.agreement`: rank correlation between methods.
"""

from __future__ import annotations

from reporter.metrics.trust.agreement import agreement_summary, method_agreement
from reporter.metrics.trust.faithfulness import (
    ConfidenceChange,
    DeletionInsertion,
    average_drop_increase,
    baseline_images,
    deletion_insertion,
)
from reporter.metrics.trust.localization import (
    dilate,
    energy_pointing_game,
    per_class,
    pointing_game,
)
from reporter.metrics.trust.sanity import (
    SPEARMAN_THRESHOLD,
    SSIM_THRESHOLD,
    SanityVerdict,
    parameter_layers,
    randomization_scores,
    randomized_copies,
    rank_correlation,
    ranks,
    sanity_verdict,
    ssim,
)
from reporter.metrics.trust.shortcut import (
    BORDER_EXCESS_THRESHOLD,
    LIFT_THRESHOLD,
    OUTSIDE_THRESHOLD,
    border_fraction,
    border_share,
    location_agreement,
    outside_fraction,
    shortcut_scores,
)

__all__ = [
    "BORDER_EXCESS_THRESHOLD",
    "LIFT_THRESHOLD",
    "OUTSIDE_THRESHOLD",
    "SPEARMAN_THRESHOLD",
    "SSIM_THRESHOLD",
    "ConfidenceChange",
    "DeletionInsertion",
    "SanityVerdict",
    "agreement_summary",
    "average_drop_increase",
    "baseline_images",
    "border_fraction",
    "border_share",
    "deletion_insertion",
    "dilate",
    "energy_pointing_game",
    "location_agreement",
    "method_agreement",
    "outside_fraction",
    "parameter_layers",
    "per_class",
    "pointing_game",
    "randomization_scores",
    "randomized_copies",
    "rank_correlation",
    "ranks",
    "sanity_verdict",
    "shortcut_scores",
    "ssim",
]
