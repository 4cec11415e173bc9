"""Touch a user's ``nn.Module`` and put it back as it was.

- :mod:`reporter.nn.device`: which device a model is on, and which one to compute on.
- :mod:`reporter.nn.hooks`: forward hooks that are always removed; eval mode and frozen
  parameters that are always restored; module lookup by dotted name.
- :mod:`reporter.nn.layers`: one traced dry run that lists layers, picks ``auto`` and resolves a
  layer whose output a later module overwrites in place.
- :mod:`reporter.nn.memory_format`: the channels-last probe (CPU), cached per model.
- :mod:`reporter.nn.cache`: the per-model cache those probes use.
"""
