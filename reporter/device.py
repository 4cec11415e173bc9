"""Backwards-compatible alias of :mod:`reporter.nn.device` (to be deleted)."""

from reporter.nn.device import model_device, resolve_device

__all__ = ["model_device", "resolve_device"]
