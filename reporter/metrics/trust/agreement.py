"""Agreement between explanation methods: per-image Spearman rank correlation for every pair."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import torch

from reporter.metrics.trust._common import as_maps, resize_maps
from reporter.metrics.trust.sanity import _centred, _cosine, ranks

__all__ = ["agreement_summary", "method_agreement"]


def method_agreement(
    maps_by_method: Mapping[str, torch.Tensor],
) -> dict[tuple[str, str], torch.Tensor]:
    """Per-image Spearman correlation between the maps of every pair of methods.

    Args:
        maps_by_method: ``{method: [B, h, w]}`` for the same images and targets. Maps of
            different resolutions are resized bilinearly to the largest one.

    Returns:
        ``{(method_a, method_b): [B]}`` for every unordered pair, in the mapping's order.

    Raises:
        ValueError: when the methods have different numbers of maps.
    """
    maps = {name: as_maps(m, name) for name, m in maps_by_method.items()}
    if not maps:
        return {}
    counts = {m.shape[0] for m in maps.values()}
    if len(counts) > 1:
        raise ValueError(f"every method needs the same number of maps, got {sorted(counts)}")
    height = max(m.shape[-2] for m in maps.values())
    width = max(m.shape[-1] for m in maps.values())
    # each method's ranks once (the sort is the cost), then one cosine per pair:
    # rank_correlation(a, b) == _cosine(_centred(ranks(a)), _centred(ranks(b)))
    centred = {
        name: _centred(ranks(resize_maps(m.float(), (height, width)).flatten(1)))
        for name, m in maps.items()
    }
    return {(a, b): _cosine(centred[a], centred[b]) for a, b in combinations(maps, 2)}


def agreement_summary(
    pairs: Mapping[tuple[str, str], torch.Tensor],
) -> dict[str, dict[str, float]]:
    """Mean correlation as a symmetric, JSON-ready nested dict (``1.0`` on the diagonal)."""
    names = list(dict.fromkeys(n for pair in pairs for n in pair))
    out: dict[str, dict[str, float]] = {n: {n: 1.0} for n in names}
    for (a, b), rho in pairs.items():
        mean = float(rho.float().mean())
        out[a][b] = mean
        out[b][a] = mean
    return out
