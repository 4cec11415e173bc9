"""Build a model by architecture name: ``gapnet`` or any torchvision classification model."""

from __future__ import annotations

import difflib
from functools import lru_cache

from torch import nn

from reporter.errors import ReporterError
from reporter.models.gapnet import GapNet
from reporter.models.meta import int_pair

__all__ = ["available_architectures", "build_model", "default_input_size"]


@lru_cache(maxsize=1)
def _torchvision_classifiers() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def available_architectures() -> list[str]:
    """Every architecture name :func:`build_model` accepts."""
    return ["gapnet", *_torchvision_classifiers()]


def default_input_size(arch: str) -> tuple[int, int]:
    """A sensible input size for an architecture when nothing else says."""
    if arch == "gapnet":
        return (32, 32)
    if arch.startswith("inception"):
        return (299, 299)
    return (224, 224)


def _replace_first_conv(model: nn.Module, channels: int) -> None:
    """Make the first convolution accept ``channels`` input channels (fresh weights)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == channels:
                return
            new = nn.Conv2d(
                channels,
                module.out_channels,
                kernel_size=int_pair(module.kernel_size, "kernel_size"),
                stride=int_pair(module.stride, "stride"),
                padding=(
                    module.padding
                    if isinstance(module.padding, str)
                    else int_pair(module.padding, "padding")
                ),
                dilation=int_pair(module.dilation, "dilation"),
                groups=1 if module.groups == module.in_channels else module.groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, new)
            return
    raise ReporterError("The architecture has no Conv2d layer to adapt to the input channels.")


def build_model(arch: str, num_classes: int, channels: int = 3) -> nn.Module:
    """Build an untrained model.

    Args:
        arch: ``gapnet`` or a torchvision classification architecture
            (``torchvision.models.list_models()``), built with ``weights=None``.
        num_classes: Number of output classes.
        channels: Input channels; the first convolution is adapted when it differs from 3.

    Raises:
        ReporterError: for an unknown architecture (the message lists the closest names).
    """
    if arch == "gapnet":
        return GapNet(in_channels=channels, num_classes=num_classes)
    names = _torchvision_classifiers()
    if arch not in names:
        close = difflib.get_close_matches(arch, ["gapnet", *names], n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ReporterError(
            f"Unknown architecture {arch!r}.{hint} Use 'gapnet' or a torchvision "
            "classification model name (e.g. resnet18, mobilenet_v3_small, vit_b_16)."
        )
    import torchvision

    kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if arch.startswith(("inception", "googlenet")):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(arch, **kwargs)
    if channels != 3:
        _replace_first_conv(model, channels)
    return model
