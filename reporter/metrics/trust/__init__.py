"""Trust metrics: can the explanations be believed?

Pure, batched tensor code (no hooks, I/O or printing); the pipeline computes the maps and calls:

- :mod:`~reporter.metrics.trust.sanity`: model-parameter randomization (Adebayo et al. 2018).
- :mod:`~reporter.metrics.trust.faithfulness`: deletion / insertion (Petsiuk et al. 2018) and
  average drop / increase (Chattopadhay et al. 2018).
- :mod:`~reporter.metrics.trust.localization`: pointing game and energy-based pointing game.
- :mod:`~reporter.metrics.trust.shortcut`: per-class saliency statistics ("inspect" candidates).
- :mod:`~reporter.metrics.trust.interventions`: shortcut detection by intervention (background
  swap with masks; consistent region, ablation and paste without).
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
    faithfulness_with_references,
    fully_removed,
    random_map_reference,
)
from reporter.metrics.trust.interventions import (
    CueSearch,
    InterventionEffect,
    PasteEffect,
    Region,
    RegionCue,
    background_swap,
    class_mean_maps,
    consistent_region,
    pasted_images,
    pixel_contrast_maps,
    region_ablation,
    region_cue,
    region_paste,
    region_proposals,
    region_shortcuts,
    search_forward_passes,
    search_region_cues,
    swapped_images,
)
from reporter.metrics.trust.localization import (
    ZHANG_TOLERANCE,
    dilate,
    energy_pointing_game,
    per_class,
    pointing_game,
    zhang_tolerance,
)
from reporter.metrics.trust.sanity import (
    BATCHNORM_NOTE,
    SANITY_MEANINGS,
    SPEARMAN_THRESHOLD,
    SSIM_THRESHOLD,
    GradedSanity,
    SanityVerdict,
    grade_randomization,
    graded_randomization,
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
    LOCATION_AGREEMENT_THRESHOLD,
    OUTSIDE_THRESHOLD,
    border_fraction,
    border_share,
    location_agreement,
    outside_fraction,
    shortcut_scores,
)

__all__ = [
    "BATCHNORM_NOTE",
    "BORDER_EXCESS_THRESHOLD",
    "LIFT_THRESHOLD",
    "LOCATION_AGREEMENT_THRESHOLD",
    "OUTSIDE_THRESHOLD",
    "SANITY_MEANINGS",
    "SPEARMAN_THRESHOLD",
    "SSIM_THRESHOLD",
    "ZHANG_TOLERANCE",
    "ConfidenceChange",
    "CueSearch",
    "DeletionInsertion",
    "GradedSanity",
    "InterventionEffect",
    "PasteEffect",
    "Region",
    "RegionCue",
    "SanityVerdict",
    "agreement_summary",
    "average_drop_increase",
    "background_swap",
    "baseline_images",
    "border_fraction",
    "border_share",
    "class_mean_maps",
    "consistent_region",
    "deletion_insertion",
    "dilate",
    "energy_pointing_game",
    "faithfulness_with_references",
    "fully_removed",
    "grade_randomization",
    "graded_randomization",
    "location_agreement",
    "method_agreement",
    "outside_fraction",
    "parameter_layers",
    "pasted_images",
    "per_class",
    "pixel_contrast_maps",
    "pointing_game",
    "random_map_reference",
    "randomization_scores",
    "randomized_copies",
    "rank_correlation",
    "ranks",
    "region_ablation",
    "region_cue",
    "region_paste",
    "region_proposals",
    "region_shortcuts",
    "sanity_verdict",
    "search_forward_passes",
    "search_region_cues",
    "shortcut_scores",
    "ssim",
    "swapped_images",
    "zhang_tolerance",
]
