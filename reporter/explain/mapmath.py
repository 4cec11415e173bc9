"""The engine's map math: every map of a batch after the backward pass, as one pure function.

:class:`MapMath` reads :mod:`reporter.explain.registry` to know what each method takes and
which function computes it; :func:`split_flat` cuts its flat output back into maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from reporter.explain import methods as M
from reporter.explain.registry import METHODS

__all__ = ["MapMath", "split_flat"]


class MapMath:
    """The engine's pure tensor math for one batch: every map, in one flat buffer.

    Called with the activations of each layer, then (when a method of kind ``gradient`` is
    asked for) their gradients, then (kind ``scores``) the Score-CAM target scores ``[B, C]``
    of each layer, then the logits and targets, then (kind ``head``) the final linear weight
    ``[K, C]``. Returns the maps (layer by layer, methods in order), logits and targets
    concatenated, so the results reach the CPU with one copy. It never synchronises with the
    host, so :class:`~reporter.explain.graphs.GraphedFunction` can record it as a CUDA graph.

    Args:
        methods: Method names (keys of :data:`reporter.explain.registry.METHODS`).
        n_layers: Number of layers.
    """

    def __init__(self, methods: Sequence[str], n_layers: int) -> None:
        self.specs = [METHODS[m] for m in methods]
        self.methods = [s.name for s in self.specs]
        self.n_layers = n_layers
        self.grad_methods = [s.name for s in self.specs if s.kind == "gradient"]
        self.needs_scores = any(s.kind == "scores" for s in self.specs)
        self.needs_head = any(s.kind == "head" for s in self.specs)

    def __call__(self, *tensors: Tensor) -> Tensor:
        n = self.n_layers
        it = iter(tensors)
        acts = [next(it) for _ in range(n)]
        grads = [next(it) for _ in range(n)] if self.grad_methods else [None] * n
        scores = [next(it) for _ in range(n)] if self.needs_scores else [None] * n
        logits, targets = next(it), next(it)
        rows = next(it)[targets] if self.needs_head else None
        extra = {"gradient": grads, "scores": scores, "head": [rows] * n}
        parts: list[Tensor] = []
        for i, a in enumerate(acts):
            g = grads[i]
            # The fused path shares intermediate products between gradient methods.
            computed = M.gradient_maps(a, g, self.grad_methods) if g is not None else {}
            for spec in self.specs:
                if spec.name in computed:
                    value = computed[spec.name]
                elif spec.kind == "activation":
                    value = spec.compute(a)
                else:
                    value = spec.compute(a, extra[spec.kind][i])
                parts.append(value.reshape(-1))
        parts += [logits.float().reshape(-1), targets.to(logits.device).float().reshape(-1)]
        return torch.cat(parts)


def _flags_of(stacked: Tensor) -> Tensor:
    """``[M, B, n]`` maps -> ``[M, B]`` bool: all zero, or holding NaN/inf."""
    return (~torch.isfinite(stacked)).any(dim=2) | (stacked == 0).all(dim=2)


def split_flat(
    flat: Tensor,
    methods: list[str],
    layers: list[str],
    shapes: list[tuple[int, ...]],
    logits_shape: tuple[int, ...],
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]], Tensor, Tensor]:
    """Cut :class:`MapMath`'s flat CPU buffer into maps, flags, logits and targets.

    All methods of a layer share a shape, so the flags take a few vectorised operations per
    layer instead of several per map.
    """
    maps: dict[str, dict[str, Tensor]] = {m: {} for m in methods}
    flags: dict[str, dict[str, Tensor]] = {m: {} for m in methods}
    pos = 0
    for layer, shape in zip(layers, shapes, strict=True):
        size = int(torch.Size(shape).numel())
        block = flat[pos : pos + size * len(methods)].reshape(len(methods), shape[0], -1)
        layer_flags = _flags_of(block)
        for i, m in enumerate(methods):
            maps[m][layer] = block[i].reshape(shape)
            flags[m][layer] = layer_flags[i]
        pos += size * len(methods)
    n_logits = int(torch.Size(logits_shape).numel())
    logits = flat[pos : pos + n_logits].reshape(logits_shape)
    targets = flat[pos + n_logits : pos + n_logits + logits_shape[0]].long()
    return maps, flags, logits, targets
