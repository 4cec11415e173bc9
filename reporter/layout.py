"""Backwards-compatible alias of :mod:`reporter.nn.memory_format` (to be deleted)."""

from reporter.nn.memory_format import use_channels_last

__all__ = ["use_channels_last"]
