"""Answers about a model (a probe's verdict, a dry run's trace) kept for as long as they hold.

A :class:`PerModelCache` holds values per model (weakly: the cache never keeps a model alive)
and per key (the input's shape, device and dtype). Every lookup compares a cheap signature of
the model (the identity of each submodule and each parameter, with the parameters' shapes,
dtypes and devices), so replacing a layer or a parameter, or moving or casting the model,
drops everything cached for it. Changing parameter *values* in place does not: cache only
answers that do not depend on them.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

import torch
from torch import nn

__all__ = ["PerModelCache", "input_key", "model_signature"]

T = TypeVar("T")


def model_signature(model: nn.Module) -> tuple[Hashable, ...]:
    """Identity of every submodule and parameter, with each parameter's shape, dtype and device."""
    modules = tuple(id(m) for m in model.modules())
    params = tuple((id(p), tuple(p.shape), p.dtype, p.device) for p in model.parameters())
    return modules, params


def input_key(shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> Hashable:
    """Key for one input of ``shape`` (batch axis excluded by the caller), device and dtype."""
    return tuple(int(s) for s in shape), torch.device(device), dtype


class PerModelCache(Generic[T]):
    """Values per (model, key), dropped when the model is collected or its signature changes."""

    def __init__(self) -> None:
        self._store: weakref.WeakKeyDictionary[
            nn.Module, tuple[tuple[Hashable, ...], dict[Hashable, T]]
        ] = weakref.WeakKeyDictionary()

    def _entries(self, model: nn.Module) -> dict[Hashable, T]:
        signature = model_signature(model)
        held = self._store.get(model)
        if held is None or held[0] != signature:
            held = (signature, {})
            self._store[model] = held
        return held[1]

    def get(self, model: nn.Module, key: Hashable) -> T | None:
        """The value stored for ``model`` and ``key``, or None."""
        return self._entries(model).get(key)

    def put(self, model: nn.Module, key: Hashable, value: T) -> None:
        """Store ``value`` for ``model`` and ``key``."""
        self._entries(model)[key] = value

    def clear(self) -> None:
        """Forget every model."""
        self._store.clear()
