"""Stopping a forward pass once the needed layer has run (private helper)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

__all__ = ["StopForward", "stop_after"]


class StopForward(Exception):
    """Raised by a hook once every needed activation is recorded."""


@contextmanager
def stop_after(module: nn.Module | None) -> Iterator[None]:
    """Make ``module``'s forward raise :class:`StopForward` after it ran (hook removed after).

    Register it after the hooks that record the module's output: hooks run in order.
    """
    if module is None:
        yield
        return

    def hook(_module: nn.Module, _inputs: Any, _output: Any) -> None:
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
