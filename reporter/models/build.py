"""Build a model by architecture name.

``--arch`` accepts:

- ``gapnet`` or a torchvision classification model name (``resnet18``), built with
  ``weights=None``;
- ``timm:NAME`` (or a bare timm name that torchvision does not have) when timm is installed
  (``pip install 'reporter-audit[timm]'``), built with ``pretrained=False``;
- ``package.module:factory`` for a user's own class or function, called with the keyword
  arguments of ``arch_kwargs`` (and ``num_classes`` when it takes one).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from torch import nn

from reporter.errors import ReporterError
from reporter.models.gapnet import GapNet
from reporter.models.meta import int_pair

__all__ = ["available_architectures", "build_model", "default_input_size", "is_import_path"]


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


def is_import_path(arch: str) -> bool:
    """True for ``package.module:factory`` (not ``timm:NAME``)."""
    module, sep, attr = arch.partition(":")
    return bool(sep and module and attr and module != "timm")


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def _build_timm(name: str, num_classes: int, channels: int, kwargs: Mapping[str, Any]) -> nn.Module:
    timm = _timm()
    if timm is None:
        raise ReporterError(
            f"--arch timm:{name} needs timm, which is not installed: "
            "pip install 'reporter-audit[timm]' (or pip install timm)."
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ReporterError(f"timm has no model {name!r}.{hint}")
    args = {"pretrained": False, "num_classes": num_classes, "in_chans": channels, **kwargs}
    try:
        return timm.create_model(name, **args)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built from these arguments
        raise ReporterError(
            f"timm could not build {name!r} with {_shown_kwargs(kwargs)} ({type(exc).__name__}: "
            f"{_first(exc)}). Check [arch_kwargs]."
        ) from None


def _first(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _shown_kwargs(kwargs: Mapping[str, Any]) -> str:
    return "arch_kwargs " + (", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "(none)")


def _import_factory(arch: str) -> Any:
    """The object ``package.module:attr`` names; the working directory is tried last."""
    module_name, _, attr = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name and module_name.startswith(exc.name) and cwd not in sys.path:
            sys.path.append(cwd)  # the console script does not put the working directory first
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError:
                sys.path.remove(cwd)
                module = None
        else:
            module = None
        if module is None:
            raise ReporterError(
                f"--arch {arch}: module {module_name!r} cannot be imported ({exc}). Make it "
                "importable: install your package (pip install -e .) or run from the folder "
                "that holds it (or set PYTHONPATH)."
            ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ReporterError(
            f"--arch {arch}: importing {module_name!r} failed ({type(exc).__name__}: "
            f"{_first(exc)})."
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, names, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ReporterError(f"--arch {arch}: {module_name!r} has no {attr!r}.{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise ReporterError(f"--arch {arch}: {attr!r} is not a class or function.")
    return target


def _build_from_factory(arch: str, num_classes: int, kwargs: Mapping[str, Any]) -> nn.Module:
    factory = _import_factory(arch)
    args = dict(kwargs)
    try:
        params: Mapping[str, Any] = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "num_classes" not in args and "num_classes" in params:
        args["num_classes"] = num_classes
    try:
        model = factory(**args)
    except Exception as exc:  # noqa: BLE001 - the user's factory failing is bad input
        raise ReporterError(
            f"--arch {arch}: calling it with {_shown_kwargs(args)} failed "
            f"({type(exc).__name__}: {_first(exc)}). Set its keyword arguments in the config's "
            "[arch_kwargs] table."
        ) from None
    if not isinstance(model, nn.Module):
        raise ReporterError(
            f"--arch {arch} returned a {type(model).__name__}, not a torch.nn.Module."
        )
    return model


def build_model(
    arch: str,
    num_classes: int,
    channels: int = 3,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build an untrained model.

    Args:
        arch: ``gapnet``, a torchvision classification architecture
            (``torchvision.models.list_models()``, built with ``weights=None``), ``timm:NAME``
            (or a bare timm name torchvision lacks; ``pretrained=False``), or
            ``package.module:factory`` (a class or function returning an ``nn.Module``).
        num_classes: Number of output classes (given to a factory that takes ``num_classes``).
        channels: Input channels; the first convolution is adapted when it differs from 3
            (a factory's model is used as built).
        arch_kwargs: Keyword arguments for ``timm:`` models and factories.

    Raises:
        ReporterError: for an unknown architecture (the message lists the closest names), a
            module that cannot be imported or a factory that fails.
    """
    kwargs = dict(arch_kwargs or {})
    if arch.startswith("timm:"):
        return _build_timm(arch[len("timm:") :], num_classes, channels, kwargs)
    if is_import_path(arch):
        return _build_from_factory(arch, num_classes, kwargs)
    if arch == "gapnet":
        return GapNet(in_channels=channels, num_classes=num_classes, **kwargs)
    names = _torchvision_classifiers()
    if arch not in names:
        timm = _timm()
        if timm is not None and timm.is_model(arch):
            return _build_timm(arch, num_classes, channels, kwargs)
        close = difflib.get_close_matches(arch, ["gapnet", *names], n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        dotted = (
            f" For your own class use --arch package.module:{arch}." if arch[:1].isupper() else ""
        )
        raise ReporterError(
            f"Unknown architecture {arch!r}.{hint} Use 'gapnet', a torchvision "
            "classification model name (e.g. resnet18, mobilenet_v3_small, vit_b_16), "
            f"timm:NAME, or package.module:factory for your own model.{dotted}"
        )
    import torchvision

    kwargs.update(weights=None, num_classes=num_classes)
    if arch.startswith(("inception", "googlenet")):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(arch, **kwargs)
    if channels != 3:
        _replace_first_conv(model, channels)
    return model
