"""Activation maximization: optimize images so that chosen units of a model respond strongly.

:func:`render` ties the parts together: a parameterization (:mod:`reporter.featvis.param`), the
robustness transforms (:mod:`reporter.featvis.transforms`) and objectives
(:mod:`reporter.featvis.objectives`). K objectives are optimized at once as one batch of K
images, element ``i`` driven by objective ``i`` only (in eval mode the batch elements do not
interact, and Adam's update is element-wise). The forward pass stops right after the deepest
layer an objective reads, so visualizing an early layer does not pay for the rest of the network.

The optimized images are RGB in [0, 1]; the model is given what its preprocessing would give it
(:meth:`reporter.data.Preprocess.normalize`: put in the model's ``channel_order``, then
normalised with ``mean`` / ``std``, which are in that order). :func:`size_error` says whether a
model runs up to a layer on images of a size other than its input size; :func:`fit_size` picks
the render size from it (the model's input size, with every transformed image resized back to
it, for a model that runs only at that size).

The caller's model is restored afterwards: hooks removed, ``training`` flags and
``requires_grad`` put back, parameters untouched (also when the model raises).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reporter.data.transforms import CHANNEL_ORDERS, Preprocess
from reporter.errors import ReporterError
from reporter.featvis._forward import StopForward, stop_after
from reporter.featvis.objectives import (
    LOGITS,
    Objective,
    as_objective,
    batched_objective,
    channel,
)
from reporter.featvis.param import image_param
from reporter.featvis.transforms import Transform, compose, standard_transforms
from reporter.nn.device import model_device
from reporter.nn.hooks import ActivationRecorder, eval_mode, frozen_parameters
from reporter.nn.layers import LayerInfo, resolve_layer, trace_layers

__all__ = [
    "OPTIMIZERS",
    "RenderResult",
    "fit_size",
    "image_channels_of",
    "render",
    "size_error",
]


OPTIMIZERS = ("adam", "normalized")

Progress = Callable[[int, int], None]


@dataclass
class RenderResult:
    """The images found by :func:`render` and how the objectives moved.

    Attributes:
        images: ``[K, C, H, W]`` float tensor in [0, 1] on the CPU, one image per objective.
        objectives: The objectives' readable names, one per image.
        history: ``[steps, K]`` objective values at each step (on the transformed images).
        initial: ``[K]`` objective values of the starting images (no transforms).
        final: ``[K]`` objective values of the final images (no transforms).
        settings: The parameters of the run (param, size, steps, lr, optimizer, seed,
            transforms, channel_order).
    """

    images: torch.Tensor
    objectives: list[str]
    history: torch.Tensor
    initial: torch.Tensor
    final: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no images)."""
        return {
            "objectives": list(self.objectives),
            "initial": [float(v) for v in self.initial],
            "final": [float(v) for v in self.final],
            "settings": dict(self.settings),
        }

    def _repr_html_(self) -> str:
        """Jupyter's view: the images with their objectives and values."""
        from reporter.notebook import render_result_html

        return render_result_html(self)


@contextmanager
def _on_device(model: nn.Module, device: torch.device) -> Iterator[None]:
    tensors = [*model.parameters(), *model.buffers()]
    before = tensors[0].device if tensors else device
    if before == device:
        yield
        return
    model.to(device)
    try:
        yield
    finally:
        model.to(before)


def image_channels_of(model: nn.Module, default: int = 3) -> int:
    """The number of input channels the model's first convolution expects (``default`` if none)."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return default


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``H`` or ``(H, W)`` as ``(H, W)``."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def size_error(
    model: nn.Module,
    layer: str,
    size: int | tuple[int, int],
    *,
    image_channels: int | None = None,
    trace_size: int | tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> str | None:
    """Why ``model`` cannot run up to ``layer`` on a ``size`` image, or ``None`` when it can.

    One forward pass of a zero image, stopped right after ``layer`` (as :func:`render` stops
    it), so a head that needs the exact input size (a flatten before a linear layer) does not
    count; position embeddings of a fixed size, or a model that checks its input, do. Use it
    before rendering at a size other than the model's input size.

    Args:
        model: The classifier. Its mode is restored afterwards and no hook is left behind.
        layer: The layer the render reads (a dotted name of ``model.named_modules()``).
        size: The image size to check, ``H`` or ``(H, W)``.
        image_channels: Input channels; defaults to the first convolution's ``in_channels``.
        trace_size: The size the model is known to run at (its input size), to find the layer
            and where the forward pass can stop; defaults to ``size``.
        device: Where to run; defaults to the model's device.

    Returns:
        ``None``, or one line: the exception the model raised (type and first 200 characters).

    Raises:
        ReporterError: for an unknown layer, or a model that fails at ``trace_size`` itself.
    """
    dev = torch.device(device) if device is not None else model_device(model)
    n_channels = image_channels or image_channels_of(model)
    hw = _hw(size)
    with _on_device(model, dev):
        sample = torch.zeros(1, n_channels, *_hw(trace_size if trace_size is not None else hw))
        info = resolve_layer(model, layer, trace_layers(model, sample.to(dev)), need_grid=False)
        stop = dict(model.named_modules())[info.name] if info.calls == 1 else None
        with eval_mode(model), stop_after(stop), torch.no_grad():
            try:
                model(torch.zeros(1, n_channels, *hw, device=dev))
            except StopForward:
                return None
            except Exception as exc:  # noqa: BLE001 - any failure is the answer, said in one line
                text = " ".join(str(exc).split()) or "no message"
                text = text if len(text) <= 200 else text[:197] + "..."
                return f"{type(exc).__name__}: {text}"
    return None


def fit_size(
    model: nn.Module,
    layer: str,
    size: int | tuple[int, int],
    input_size: int | tuple[int, int],
    *,
    image_channels: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[tuple[int, int], str | None]:
    """The size to render ``layer`` at, and ``None`` or why the model's input size is used.

    ``size`` when the model runs up to ``layer`` at it (checked by :func:`size_error`; for
    ``size`` equal to ``input_size``, at one pixel more on each side, since the robustness
    transforms change the size at every step). Otherwise ``input_size`` and the reason: render
    it with ``fixed_size=True`` (every transformed image resized back to the input size).

    Raises:
        ReporterError: for an unknown layer, or a model that fails at ``input_size``.
    """
    full, wanted = _hw(input_size), _hw(size)
    probe = wanted if wanted != full else (full[0] + 1, full[1] + 1)
    error = size_error(
        model, layer, probe, image_channels=image_channels, trace_size=full, device=device
    )
    if error is None:
        return wanted, None
    return full, f"the model does not run up to {layer} on a {probe[0]}x{probe[1]} image ({error})"


def _objective_list(
    objective: Objective | str | Sequence[Objective | str], channels: Iterable[int] | None
) -> list[Objective]:
    if channels is not None:
        if not isinstance(objective, str) or ":" in objective:
            raise ReporterError(
                "With channels=..., give a layer name as the objective (e.g. 'layer3'), "
                f"not {objective!r}."
            )
        objs = [channel(objective, int(c)) for c in channels]
        if not objs:
            raise ReporterError("No channels given to visualize.")
        return objs
    if isinstance(objective, (str, Objective)):
        return [as_objective(objective)]
    objs = [as_objective(o) for o in objective]
    if not objs:
        raise ReporterError("No objectives given to visualize.")
    return objs


def _resolve(
    model: nn.Module, names: list[str], infos: list[LayerInfo]
) -> tuple[dict[str, str], LayerInfo | None]:
    """Map each user layer name to the module to hook; return the module to stop after."""
    resolved = {name: resolve_layer(model, name, infos, need_grid=False) for name in names}
    hooked = {name: info.name for name, info in resolved.items()}
    last = list(resolved.values())
    stop = max(last, key=lambda i: i.order) if last and all(i.calls == 1 for i in last) else None
    return hooked, stop


def render(
    model: nn.Module,
    objective: Objective | str | Sequence[Objective | str],
    *,
    channels: Iterable[int] | None = None,
    param: str = "fft",
    size: int | tuple[int, int] = 128,
    steps: int = 256,
    lr: float = 0.05,
    optimizer: str = "adam",
    seed: int = 0,
    transforms: Sequence[Transform] | str | None = "standard",
    device: torch.device | str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channel_order: str = "rgb",
    image_channels: int | None = None,
    decorrelate: bool = True,
    trace_size: int | tuple[int, int] | None = None,
    fixed_size: bool = False,
    progress: Progress | None = None,
) -> RenderResult:
    """Optimize one image per objective so that the objective grows (activation maximization).

    Args:
        model: The classifier. Its mode, hooks and parameters are restored afterwards.
        objective: An :class:`~reporter.featvis.objectives.Objective`, an objective string
            (``"layer3:5"``, ``"logit:2"``, ``"layer:layer4"``, ``"-layer3:5 + layer3:6"``), or
            a list of them: one image per objective, all optimized as one batch. With
            ``channels``, the name of a layer.
        channels: Channel indices of the layer named by ``objective``: one image per channel.
        param: ``"fft"`` (Fourier space with 1/f scaling, readable images) or ``"pixel"``.
        size: Image size, ``H`` or ``(H, W)``.
        steps: Optimization steps.
        lr: Adam's learning rate, or the step of the normalized rule.
        optimizer: ``"adam"`` or ``"normalized"`` (``x += lr * g / max|g|`` per image).
        seed: Seed of the initial image and the random transforms: same seed, same images.
        transforms: ``"standard"`` (pad, jitter, scale, rotate, scaled to ``size``), ``None``
            for none, or a list of transforms.
        device: Where to run; defaults to the model's device. The model is moved back after.
        mean: Per-channel normalization mean the model expects (images are in [0, 1]), in the
            model's channel order.
        std: Per-channel normalization standard deviation, in the model's channel order.
        channel_order: ``"rgb"`` or ``"bgr"``: the channel order the model was trained with
            (``ModelMeta.channel_order``). The images are optimized and returned in RGB and
            reordered for the model before the normalisation, as the data is.
        image_channels: Input channels; defaults to the first convolution's ``in_channels``.
        decorrelate: Decorrelated colour basis for three-channel images.
        trace_size: Input size at which the layers are traced (found, checked, and the point
            where the forward pass stops); defaults to ``size``. Give the model's input size
            when rendering at another size, for a model whose whole forward pass only runs at
            its input size (check the render size with :func:`size_error` first).
        fixed_size: Resize every transformed image back to ``size`` (bilinear) before the
            forward pass, for a model that runs only at one input size (:func:`fit_size`). The
            random shifts and rotations keep their effect; the random rescaling is mostly
            undone by the resize.
        progress: Called as ``progress(step, steps)`` after every step.

    Returns:
        A :class:`RenderResult` with ``images`` ``[K, C, H, W]`` in [0, 1].

    Raises:
        ReporterError: for unknown layers, out-of-range channels or bad settings.
    """
    objectives = _objective_list(objective, channels)
    if optimizer not in OPTIMIZERS:
        raise ReporterError(
            f"Unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}."
        )
    if steps < 1:
        raise ReporterError(f"steps must be >= 1, got {steps}.")
    if lr <= 0:
        raise ReporterError(f"lr must be > 0, got {lr}.")
    if channel_order not in CHANNEL_ORDERS:
        raise ReporterError(
            f"Unknown channel_order {channel_order!r}; use {' or '.join(CHANNEL_ORDERS)}."
        )
    dev = torch.device(device) if device is not None else model_device(model)
    n_channels = image_channels or image_channels_of(model)
    hw = _hw(size)
    if isinstance(transforms, str):
        if transforms != "standard":
            raise ReporterError(f"Unknown transforms {transforms!r}; use 'standard' or None.")
        transforms = standard_transforms(min(hw))
    transform = compose(list(transforms or []))
    means = [float(v) for v in mean] if mean is not None else [0.0]
    stds = [float(v) for v in std] if std is not None else [1.0]
    if len(means) not in (1, n_channels) or len(stds) not in (1, n_channels):
        raise ReporterError(f"mean and std need 1 or {n_channels} values (one per channel).")
    # the one normalisation: the data's (channel order, then mean / std in that order)
    preprocess = Preprocess(hw, n_channels, means, stds, channel_order=channel_order).to(dev)

    k = len(objectives)
    names = list(dict.fromkeys(n for o in objectives for n in o.layers if n != LOGITS))
    needs_logits = any(LOGITS in o.layers for o in objectives)
    value_fn = batched_objective(objectives)
    generator = torch.Generator().manual_seed(int(seed))

    with _on_device(model, dev):
        traced = _hw(trace_size) if trace_size is not None else hw
        sample = torch.zeros(1, n_channels, *traced, device=dev)
        infos = trace_layers(model, sample) if names else []
        hooked, stop = _resolve(model, names, infos)
        modules = dict(model.named_modules())
        stop_module = None if needs_logits or stop is None else modules[stop.name]
        with (
            eval_mode(model),
            frozen_parameters(model),
            ActivationRecorder(model, list(dict.fromkeys(hooked.values()))) as recorder,
            stop_after(stop_module),
            torch.enable_grad(),
        ):

            def evaluate(images: torch.Tensor) -> torch.Tensor:
                recorder.clear()
                x = preprocess.normalize(images)
                out = None
                with suppress(StopForward):
                    out = model(x)
                acts = {name: recorder.outputs[h] for name, h in hooked.items()}
                if needs_logits:
                    if out is None:  # cannot happen: no stop hook is set when logits are needed
                        raise RuntimeError("the forward pass stopped before the logits")
                    acts[LOGITS] = out
                return value_fn(acts)

            image = image_param(
                param, k, n_channels, hw, decorrelate=decorrelate, generator=generator, device=dev
            )
            params = image.params
            adam = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else None
            with torch.no_grad():
                initial = evaluate(image()).detach().cpu()
            history = []
            for step in range(steps):
                moved = transform(image(), generator)
                if fixed_size and tuple(moved.shape[-2:]) != hw:
                    moved = F.interpolate(moved, size=hw, mode="bilinear", align_corners=False)
                values = evaluate(moved)
                grads = torch.autograd.grad(-values.sum(), params)
                with torch.no_grad():
                    if adam is not None:
                        for p, g in zip(params, grads, strict=True):
                            p.grad = g
                        adam.step()
                    else:
                        for p, g in zip(params, grads, strict=True):
                            peak = g.flatten(1).abs().amax(1).clamp_min(1e-12)
                            p.sub_(lr * g / peak.view(-1, *([1] * (g.dim() - 1))))
                history.append(values.detach().cpu())
                if progress is not None:
                    progress(step + 1, steps)
            with torch.no_grad():
                images = image().detach()
                final = evaluate(images).detach().cpu()
            recorder.clear()
            for p in params:
                p.grad = None
    settings = {
        "param": param,
        "size": list(hw),
        "steps": steps,
        "lr": lr,
        "optimizer": optimizer,
        "seed": int(seed),
        "transforms": "standard" if transforms else None,
        "channel_order": channel_order,
        "fixed_size": bool(fixed_size),
    }
    return RenderResult(
        images=images.cpu(),
        objectives=[o.name for o in objectives],
        history=torch.stack(history),
        initial=initial,
        final=final,
        settings=settings,
    )
