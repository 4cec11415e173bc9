"""Backwards-compatible alias of :mod:`reporter.nn.layers` (to be deleted)."""

from reporter.nn.layers import auto_layer, trace_layers

__all__ = ["auto_layer", "trace_layers"]
