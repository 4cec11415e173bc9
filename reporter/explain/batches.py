"""Maps for many images: the engine run batch by batch, upsampled and normalised for display."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from reporter.explain.engine import CamEngine

__all__ = ["explain_batches"]


def explain_batches(
    model: nn.Module,
    images: Tensor,
    *,
    layers: Sequence[str] | str,
    methods: Sequence[str] | str,
    targets: Tensor | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    normalize: bool = True,
    channels_last: bool | None = None,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]]]:
    """Maps for many images, in batches, upsampled to the input size and normalised to [0, 1]
    (or raw, after the method's ReLU, with ``normalize=False``).

    Args:
        model: The classifier (restored afterwards, as with :class:`CamEngine`).
        images: ``[N, C, H, W]`` model inputs.
        layers: Layer names or ``"auto"``.
        methods: Method names.
        targets: ``[N]`` classes to explain; ``None`` for the predicted classes.
        batch_size: Images per engine call.
        device: Where to compute (default: as :class:`CamEngine` chooses).
        normalize: Min-max normalise each map (display); ``False`` keeps the raw values, which
            mass-based metrics (energy inside an object) need.
        channels_last: As for :class:`CamEngine` (``None``: probe the model once).

    Returns:
        ``(maps, flags)``: ``maps[method][layer]`` is ``[N, H, W]`` and ``flags[method][layer]``
        ``[N]`` (True for all-zero or NaN maps), keyed by resolved layer names.
    """
    maps: dict[str, dict[str, list[Tensor]]] = {}
    flags: dict[str, dict[str, list[Tensor]]] = {}
    with CamEngine(
        model,
        layers=layers,
        methods=methods,
        device=device,
        input_shape=tuple(images.shape[1:]),
        channels_last=channels_last,
    ) as engine:
        for start in range(0, len(images), batch_size):
            sl = slice(start, start + batch_size)
            batch_targets = None if targets is None else targets[sl].to(engine.device)
            res = engine(images[sl].to(engine.device), batch_targets)
            for m in res.methods:
                for layer in res.layers:
                    maps.setdefault(m, {}).setdefault(layer, []).append(
                        res.upsampled(m, layer, normalize=normalize)
                    )
                    flags.setdefault(m, {}).setdefault(layer, []).append(res.flags[m][layer])
    return (
        {m: {k: torch.cat(v) for k, v in d.items()} for m, d in maps.items()},
        {m: {k: torch.cat(v) for k, v in d.items()} for m, d in flags.items()},
    )
