"""Feature visualization: what the units of a layer respond to.

- Activation maximization: :func:`render` (:func:`size_error`, :func:`fit_size`: can a model
  render at a size other than its input size) with objectives (:mod:`.objectives`), image
  parameterizations (:mod:`.param`) and robustness transforms (:mod:`.transforms`).
- Views from data, streamed during the audit pass (:mod:`.dataset_views`): top-k activating
  examples with receptive-field crops, class-relevant channels, filter grids, activation maps.
- PNG grids (:mod:`.grids`) and the ``reporter featvis`` command (:mod:`.cli`, imports click).
"""

from __future__ import annotations

from reporter.featvis.dataset_views import (
    ClassChannelRelevance,
    ReceptiveField,
    TopKActivations,
    TopKExample,
    activation_maps,
    filter_grid,
    layer_gradients,
    receptive_field,
)
from reporter.featvis.objectives import (
    Objective,
    channel,
    layer,
    logit,
    neuron,
    parse_objective,
)
from reporter.featvis.render import RenderResult, fit_size, render, size_error

__all__ = [
    "ClassChannelRelevance",
    "Objective",
    "ReceptiveField",
    "RenderResult",
    "TopKActivations",
    "TopKExample",
    "activation_maps",
    "channel",
    "filter_grid",
    "fit_size",
    "layer",
    "layer_gradients",
    "logit",
    "neuron",
    "parse_objective",
    "receptive_field",
    "render",
    "size_error",
]
