"""Layer names: listing with output shapes, the ``auto`` choice, and validation of user names.

Layer names are PyTorch dotted names from ``model.named_modules()`` (``layer4.1.conv2``).
One dry run with forward hooks on every module gives each module's output shape, how often it
ran and in what order; from that we list layers, pick ``auto`` (the deepest layer whose grid is
at least 7x7 at the input size, and say why) and catch the in-place trap (a conv whose output
a later ``ReLU(inplace=True)`` overwrites: we resolve it to the module that produced the final
value and say so).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from reporter.errors import ReporterError
from reporter.nn.cache import PerModelCache, input_key
from reporter.nn.hooks import eval_mode, first_tensor, unknown_layer_message

__all__ = [
    "MIN_GRID",
    "LayerInfo",
    "auto_layer",
    "auto_layer_choice",
    "resolve_layer",
    "resolve_layers",
    "token_grid",
    "trace_layers",
]

log = logging.getLogger(__name__)


@dataclass
class LayerInfo:
    """What one dry run tells about one named module.

    Attributes:
        name: Dotted module name.
        type: The module's class name.
        output_shape: Shape of its (last) output without the batch axis, or ``None``.
        calls: How many times it ran in one forward pass.
        order: Position of its last call among all module calls.
        kind: ``"spatial"`` for ``[B, C, h, w]`` outputs, ``"tokens"`` for transformer token
            sequences that map onto a patch grid, ``None`` otherwise.
        grid: ``(gh, gw, has_class_token)`` for token outputs.
        overwritten_by: Name of the module that later modified this output in place, if any.
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None = None
    calls: int = 0
    order: int = -1
    kind: str | None = None
    grid: tuple[int, int, bool] | None = None
    overwritten_by: str | None = None
    _ptr: int = field(default=0, repr=False)
    _version: int = field(default=0, repr=False)
    _tensor: Any = field(default=None, repr=False)

    @property
    def cam_ready(self) -> bool:
        """True when class activation maps can be computed on this layer."""
        return self.kind is not None


_TRACES: PerModelCache[list[LayerInfo]] = PerModelCache()
"""What :func:`trace_layers` found, per model and input (shape, device, dtype)."""


def token_grid(n_tokens: int, input_size: tuple[int, int]) -> tuple[int, int, bool] | None:
    """Infer the patch grid of a token sequence from the token count and the input size.

    Returns ``(gh, gw, has_class_token)`` when ``n_tokens`` (or ``n_tokens - 1``, with a class
    token first) equals ``(H / p) * (W / p)`` for an integer patch size ``p``, else ``None``.
    """
    height, width = input_size
    for has_cls, n in ((False, n_tokens), (True, n_tokens - 1)):
        if n < 2:
            continue
        # patch p with (H/p) * (W/p) == n  ->  p = sqrt(H * W / n)
        p = math.sqrt(height * width / n)
        p_int = round(p)
        if p_int > 0 and abs(p - p_int) < 1e-6 and height % p_int == 0 and width % p_int == 0:
            return height // p_int, width // p_int, has_cls
    return None


def trace_layers(
    model: nn.Module, sample: torch.Tensor, *, leaves_only: bool = False
) -> list[LayerInfo]:
    """Run one forward pass on ``sample`` with a hook on every module and describe each module.

    The model's mode is restored afterwards and every hook removed, also when it raises. The
    result is cached per model and per input shape (batch axis excluded), device and dtype
    (:class:`reporter.nn.cache.PerModelCache`: dropped when a layer or parameter is replaced),
    so an engine opened once per batch traces once.
    """
    key = (input_key(sample.shape[1:], sample.device, sample.dtype), leaves_only)
    cached = _TRACES.get(model, key)
    if cached is None:
        cached = _trace(model, sample, leaves_only=leaves_only)
        _TRACES.put(model, key, cached)
    return [replace(info) for info in cached]


def _trace(model: nn.Module, sample: torch.Tensor, *, leaves_only: bool) -> list[LayerInfo]:
    input_size = (int(sample.shape[-2]), int(sample.shape[-1]))
    infos: dict[str, LayerInfo] = {}
    counter = [0]
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            info = infos[name]
            info.calls += 1
            info.order = counter[0]
            counter[0] += 1
            tensor = first_tensor(output)
            if tensor is None:
                return
            info.output_shape = tuple(int(s) for s in tensor.shape[1:])
            info._ptr = tensor.data_ptr()
            info._version = tensor._version
            info._tensor = tensor
            if tensor.dim() == 4 and tensor.shape[-1] * tensor.shape[-2] > 1:
                info.kind = "spatial"
                info.grid = None
            elif tensor.dim() == 3:
                grid = token_grid(int(tensor.shape[1]), input_size)
                info.kind = "tokens" if grid else None
                info.grid = grid
            else:
                info.kind = None
                info.grid = None

        return hook

    for name, module in model.named_modules():
        if not name or (leaves_only and any(True for _ in module.children())):
            continue
        infos[name] = LayerInfo(name=name, type=type(module).__name__)
        handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with eval_mode(model), torch.no_grad():
            model(sample)
    except Exception as exc:
        raise ReporterError(
            f"The model failed on a dry run with input shape {tuple(sample.shape)}: {exc}. "
            "Check the input size and channel count (--input-size, --channels)."
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    # In-place trap: an output whose version counter moved after its hook ran was overwritten.
    by_ptr: dict[int, list[LayerInfo]] = {}
    for info in infos.values():
        if info._tensor is not None:
            by_ptr.setdefault(info._ptr, []).append(info)
    for info in infos.values():
        if info._tensor is not None and info._tensor._version != info._version:
            later = [
                o
                for o in by_ptr.get(info._ptr, [])
                if o.order > info.order and o.output_shape == info.output_shape
            ]
            later_leaf = [o for o in later if o.calls == 1] or later
            if later_leaf:
                info.overwritten_by = min(later_leaf, key=lambda o: o.order).name
    for info in infos.values():
        info._tensor = None
    return sorted(infos.values(), key=lambda i: i.order if i.calls else 10**9)


MIN_GRID = 7
"""``auto`` prefers layers whose grid is at least this many cells on each side."""


def _grid(info: LayerInfo) -> tuple[int, int]:
    """``(h, w)`` of a layer's spatial or token grid."""
    if info.kind == "tokens" and info.grid is not None:
        return info.grid[0], info.grid[1]
    shape = info.output_shape or ()
    return (int(shape[-2]), int(shape[-1])) if len(shape) >= 3 else (1, 1)


def _block_name(infos: list[LayerInfo], last: LayerInfo, ready: list[LayerInfo]) -> str:
    """Among modules that return ``last``'s tensor, the name to show (see :func:`auto_layer`)."""
    same = [i for i in ready if i._ptr == last._ptr and i.output_shape == last.output_shape]
    # A module whose output a later module modified in place (``bn2`` before ``out += identity``
    # and an in-place ReLU in a ResNet block) did not produce the final value: skip it.
    final = [i for i in same if i.overwritten_by is None] or same
    once = [i for i in final if i.calls == 1] or final
    return max(once, key=lambda i: i.name.count(".")).name


def auto_layer_choice(infos: list[LayerInfo], min_grid: int = MIN_GRID) -> tuple[str, str]:
    """The ``auto`` layer and one sentence saying why.

    The deepest layer (last in execution order) whose grid is at least ``min_grid`` x
    ``min_grid`` at this input size: deep enough to be about classes, fine enough to show
    where. When no layer has such a grid, the deepest layer with the largest grid. Among
    modules that return the same tensor (a block and its last child), the deepest module that
    ran exactly once names it (``layer3``, ``features.relu4``).

    Raises:
        ReporterError: when no layer has a spatial or token output.
    """
    ready = [i for i in infos if i.cam_ready and i.calls >= 1]
    if not ready:
        raise ReporterError(
            "No layer of this model has a spatial ([B, C, h, w]) or token output, so class "
            "activation maps cannot be computed. Run `reporter layers MODEL` to see its layers."
        )
    deepest = max(ready, key=lambda i: i.order)
    usable = [i for i in ready if min(_grid(i)) >= min_grid]
    if usable:
        chosen = max(usable, key=lambda i: i.order)
    else:
        largest = max(_grid(i)[0] * _grid(i)[1] for i in ready)
        chosen = max(
            (i for i in ready if _grid(i)[0] * _grid(i)[1] == largest), key=lambda i: i.order
        )
    name = _block_name(infos, chosen, ready)
    gh, gw = _grid(chosen)
    if chosen is deepest or _grid(deepest) == (gh, gw):
        name = _block_name(infos, deepest, ready) if _grid(deepest) == (gh, gw) else name
        why = f"{name} ({gh}x{gw} grid): the last layer with a spatial output"
        if not usable:
            why += f"; no layer has a grid of at least {min_grid}x{min_grid} at this input size"
        return name, why + "."
    dh, dw = _grid(deepest)
    deeper = _block_name(infos, deepest, ready)
    if usable:
        why = (
            f"{name} ({gh}x{gw} grid): the deepest layer with a grid of at least "
            f"{min_grid}x{min_grid}; {deeper} is deeper but its {dh}x{dw} grid is too coarse "
            "to show where in the image the evidence is"
        )
    else:
        why = (
            f"{name} ({gh}x{gw} grid): no layer has a grid of at least {min_grid}x{min_grid} at "
            f"this input size, so the deepest layer with the largest grid; {deeper} is deeper "
            f"but {dh}x{dw}"
        )
    return name, why + "."


def auto_layer(infos: list[LayerInfo]) -> str:
    """The ``auto`` layer (see :func:`auto_layer_choice` for the rule and its reason)."""
    return auto_layer_choice(infos)[0]


def resolve_layer(
    model: nn.Module, name: str, infos: list[LayerInfo], *, need_grid: bool = True
) -> LayerInfo:
    """The layer to hook for the user's layer ``name``: the one place that applies the rules.

    Checks that the module exists and runs in the forward pass (and, with ``need_grid``, that its
    output has a spatial or token grid), and follows the in-place trap: when a later module
    (``ReLU(inplace=True)`` after a conv) overwrites this module's output, a hook on it would
    hold a tensor that changes under it, so the module that produced the final value is
    returned instead, with a warning that says so.

    Args:
        model: The model.
        name: A dotted module name (not ``auto``: see :func:`auto_layer`).
        infos: The result of :func:`trace_layers` on the model.
        need_grid: Require a ``[C, h, w]`` or token output (class activation maps do).

    Returns:
        The :class:`LayerInfo` of the module to hook.

    Raises:
        ReporterError: for unknown names, layers that do not run or have no usable output.
    """
    by_name = {i.name: i for i in infos}
    info = by_name.get(name)
    if info is None:
        raise ReporterError(unknown_layer_message(model, name))
    if info.calls == 0:
        raise ReporterError(f"Layer {name!r} does not run in the model's forward pass.")
    if need_grid and not info.cam_ready:
        raise ReporterError(
            f"Layer {name!r} ({info.type}) outputs shape {info.output_shape}, which has no "
            "spatial grid. Choose a layer with a [C, h, w] output (`reporter layers MODEL` marks "
            "them) or use 'auto'."
        )
    if info.output_shape is None:
        raise ReporterError(f"Layer {name!r} ({info.type}) returns no tensor; choose another.")
    if info.overwritten_by and info.overwritten_by in by_name:
        log.warning(
            "layer %r: its output is overwritten in place by %r; using %r, which holds the "
            "final value",
            name,
            info.overwritten_by,
            info.overwritten_by,
        )
        return by_name[info.overwritten_by]
    return info


def resolve_layers(
    model: nn.Module,
    names: list[str] | str,
    sample: torch.Tensor,
    *,
    infos: list[LayerInfo] | None = None,
) -> tuple[list[str], list[LayerInfo]]:
    """Validate layer names against one dry run and resolve ``auto`` and in-place outputs.

    Args:
        model: The model.
        names: Dotted names, ``"auto"``, or a comma-separated string of them.
        sample: An input batch of the right shape (one image is enough).
        infos: The result of an earlier :func:`trace_layers` on the same model, to skip the run.

    Returns:
        The resolved layer names (unique, in the given order) and the traced layer infos.

    Raises:
        ReporterError: for unknown names or layers without a spatial/token output.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        names = ["auto"]
    infos = infos if infos is not None else trace_layers(model, sample)
    resolved: list[str] = []
    for name in names:
        if name == "auto":
            chosen, why = auto_layer_choice(infos)
            log.info("layer 'auto' resolved to %s", why)
            resolved.append(chosen)
        else:
            resolved.append(resolve_layer(model, name, infos).name)
    return list(dict.fromkeys(resolved)), infos
