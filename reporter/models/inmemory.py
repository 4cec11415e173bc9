"""An ``nn.Module`` in memory (a notebook's model) as a :class:`LoadedModel`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from reporter.data.transforms import Preprocess
from reporter.errors import ReporterError
from reporter.models.checkpoint import LoadedModel, _infer_from_state, _logits_entry
from reporter.models.meta import ModelMeta

__all__ = ["from_module", "to_preprocess"]

log = logging.getLogger(__name__)

_IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def to_preprocess(preprocess: Any, channels: int | None = None) -> Preprocess | None:
    """A :class:`Preprocess` from what a notebook user has at hand.

    Accepts a :class:`Preprocess`, a mapping of its keywords (``input_size``, ``mean``,
    ``std``, ``resize``, ``crop``, ``channel_order``, ``grayscale``, ``channels``), or a
    torchvision ``Compose`` of ``Resize``, ``CenterCrop``, ``Grayscale``, ``ToTensor`` /
    ``PILToTensor`` / ``ToImage`` / ``ToDtype`` and ``Normalize`` (read, not called: reporter
    needs the steps apart to show the images and to perturb them in the trust checks).

    Raises:
        ReporterError: for a transform with steps reporter cannot state (it names them).
    """
    if preprocess is None or isinstance(preprocess, Preprocess):
        return preprocess
    if isinstance(preprocess, Mapping):
        args = dict(preprocess)
        size = args.pop("input_size", None)
        if size is None:
            raise ReporterError("preprocess needs an 'input_size' (pixels, or [height, width]).")
        size = (size, size) if isinstance(size, int) else tuple(size)
        ch = int(args.pop("channels", channels or 3))
        mean = args.pop("mean", _IMAGENET[0] if ch == 3 else [0.5])
        std = args.pop("std", _IMAGENET[1] if ch == 3 else [0.5])
        try:
            return Preprocess(size, ch, mean, std, **args)
        except (TypeError, ValueError) as exc:
            raise ReporterError(f"preprocess: {exc}") from None
    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        steps = [preprocess]
    return _from_torchvision(list(steps), channels)


def _side(size: Any) -> tuple[int, int] | int:
    if isinstance(size, int):
        return size
    values = list(size)
    return int(values[0]) if len(values) == 1 else (int(values[0]), int(values[1]))


def _from_torchvision(steps: list[Any], channels: int | None) -> Preprocess:
    resize: tuple[int, int] | int | None = None
    crop: tuple[int, int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    grayscale = False
    ignored = {"ToTensor", "PILToTensor", "ToImage", "ToDtype", "ConvertImageDtype"}
    unknown: list[str] = []
    for step in steps:
        kind = type(step).__name__
        if kind == "Resize":
            resize = _side(step.size)
        elif kind == "CenterCrop":
            side = _side(step.size)
            crop = (side, side) if isinstance(side, int) else side
        elif kind == "Normalize":
            mean, std = [float(v) for v in step.mean], [float(v) for v in step.std]
        elif kind == "Grayscale":
            grayscale = True
            channels = channels or int(getattr(step, "num_output_channels", 1))
        elif kind not in ignored:
            unknown.append(kind)
    if unknown:
        raise ReporterError(
            f"preprocess: reporter cannot state the step(s) {', '.join(unknown)}; pass a "
            "reporter.data.Preprocess(input_size, channels, mean, std, resize=..., crop=...) "
            "or a dict of those keys instead."
        )
    if resize is None and crop is None:
        raise ReporterError("preprocess: the transform has no Resize or CenterCrop step.")
    ch = channels or 3
    stretch = isinstance(resize, tuple)
    if crop is not None:
        size = crop
        if resize is None:
            fraction = 1.0
        else:
            short = min(resize) if isinstance(resize, tuple) else resize
            fraction = min(1.0, min(crop) / short)
    else:
        size = resize if isinstance(resize, tuple) else (resize, resize)  # type: ignore[assignment]
        fraction = 1.0
    if mean is None or std is None:
        mean, std = [0.0] * ch, [1.0] * ch
    return Preprocess(
        size,
        ch,
        mean,
        std,
        resize="stretch" if stretch else "cover",
        crop=fraction,
        grayscale=grayscale and ch != 1,
    )


def from_module(
    module: nn.Module,
    *,
    preprocess: Any = None,
    classes: Sequence[str] | None = None,
    name: str | None = None,
) -> LoadedModel:
    """Describe an in-memory model for :func:`reporter.run_audit`.

    Args:
        module: The model (left on its device; its modes are restored after the audit).
        preprocess: See :func:`to_preprocess`; ``None`` assumes 224 px and the ImageNet mean
            / std (for 3 channels), and says so in the report.
        classes: One name per output; ``None`` takes the data's class names.
        name: What the report calls the architecture (default: the class name).

    Raises:
        ReporterError: when the model does not return ``[batch, classes]`` logits, or the
            class names do not match its outputs.
    """
    if not isinstance(module, nn.Module):
        raise ReporterError(f"model must be a torch.nn.Module, got {type(module).__name__}.")
    state_ch, _ = _infer_from_state(module.state_dict())
    pre = to_preprocess(preprocess, state_ch)
    assumed: list[str] = []
    if pre is None:
        ch = state_ch or 3
        mean, std = _IMAGENET if ch == 3 else ([0.5], [0.5])
        pre = Preprocess((224, 224), ch, mean, std)
        assumed = ["input_size", "mean", "std"]
        log.warning(
            "no preprocessing given for the in-memory model: assuming 224 px and %s",
            "the ImageNet mean / std" if ch == 3 else "mean 0.5 / std 0.5",
        )
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            output = module(torch.zeros(1, pre.channels, *pre.input_size, device=device))
    except Exception as exc:  # noqa: BLE001 - a user's model failing is bad input
        raise ReporterError(
            f"The model failed on a {pre.channels}x{pre.input_size[0]}x{pre.input_size[1]} "
            f"input ({type(exc).__name__}: {exc}). Check the preprocessing's input size and "
            "channels."
        ) from None
    finally:
        module.train(was_training)
    entry = _logits_entry(output, "the model")
    if entry is not None:
        raise ReporterError(
            f"The model returns a {type(output).__name__}; reporter needs a model whose forward "
            "returns the [batch, classes] logits (wrap it in a module that returns them)."
        )
    outputs = int(output.shape[-1])
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(outputs)]
    if len(names) != outputs:
        raise ReporterError(
            f"{len(names)} class names were given but the model outputs {outputs} classes."
        )
    described = pre.describe()
    meta = ModelMeta(
        arch=name or type(module).__name__,
        num_classes=outputs,
        class_names=names,
        input_size=pre.input_size,
        channels=pre.channels,
        mean=described["mean"],
        std=described["std"],
        resize=pre.resize,
        crop=pre.crop,
        channel_order=pre.channel_order,
        grayscale=pre.grayscale,
    )
    return LoadedModel(module, meta, "an in-memory nn.Module", "module", assumed)
