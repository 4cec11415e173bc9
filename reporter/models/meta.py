"""Model metadata: what preprocessing and reporting need to know about a model."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeGuard

from reporter.errors import ReporterError

__all__ = ["ModelMeta", "int_pair"]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def int_pair(value: Sequence[int], what: str) -> tuple[int, int]:
    """``value`` as the pair of integers it must be: an ``(height, width)``, a kernel size.

    Torch and the callers' own types often say ``tuple[int, ...]`` where the value is a pair;
    this is the one checked conversion (a list or a tuple of numpy ints is accepted too).

    Raises:
        ReporterError: when ``value`` is not exactly two integers; the message names ``what``.
    """
    try:
        first, second = (operator.index(v) for v in value)
    except (TypeError, ValueError):
        raise ReporterError(f"{what} must be two integers, got {_shown(value)}.") from None
    return (first, second)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ModelMeta:
    """Facts about a model that travel with its checkpoint.

    Attributes:
        arch: Architecture name (``gapnet`` or a torchvision name), or ``torchscript``.
        num_classes: Number of output classes.
        class_names: One name per output index.
        input_size: ``(height, width)`` the model expects.
        channels: Input channels (1 grayscale, 3 RGB).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        data_fingerprint: Fingerprint of the training data (empty when unknown).
        reporter_version: Version of reporter that wrote the checkpoint.
        extra: Free-form additional fields (training history, epochs ...).
        resize: ``cover`` (keep the aspect ratio, centre crop) or ``stretch``.
        crop: Fraction of the resized image kept by the centre crop, in (0, 1].
        channel_order: ``rgb`` or ``bgr`` (``mean`` / ``std`` are in this order).
        grayscale: Images are made grey before being given to the model.
        arch_kwargs: Keyword arguments of the architecture's factory
            (``package.module:factory`` or ``timm:NAME``).
    """

    arch: str
    num_classes: int
    class_names: list[str]
    input_size: tuple[int, int] = (32, 32)
    channels: int = 1
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    data_fingerprint: str = ""
    reporter_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # stated preprocessing (reporter.data.transforms.Preprocess) and how to build the arch
    resize: str = "cover"
    crop: float = 1.0
    channel_order: str = "rgb"
    grayscale: bool = False
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of builtins, safe for ``torch.load(weights_only=True)`` and JSON."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out

    @classmethod
    def from_dict(
        cls, data: Any, *, source: str = "the checkpoint", default_arch: str | None = None
    ) -> ModelMeta:
        """Build from :meth:`to_dict` output (unknown keys ignored), checking every field.

        Args:
            data: The stored metadata.
            source: The file it came from, for messages.
            default_arch: Architecture when the metadata names none (TorchScript); without it
                a missing ``arch`` is an error.

        Raises:
            ReporterError: one line naming ``source``, the field, its value and what it should
                be (metadata that is not a dict, no arch, ``num_classes`` not a positive integer,
                class names that do not match it, ``input_size`` not two positive integers ...).
        """

        def bad(name: str, value: Any, expected: str) -> ReporterError:
            return ReporterError(
                f"{source}: the model metadata field {name!r} is {_shown(value)}; expected "
                f"{expected}. Fix the metadata or re-save the model with `reporter train`."
            )

        if not isinstance(data, dict):
            raise ReporterError(
                f"{source}: the model metadata is a {type(data).__name__}, not a table of fields "
                "(expected a dict with arch, num_classes, class_names, input_size, channels, "
                "mean, std)."
            )
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        arch = kwargs.get("arch") or default_arch
        if not isinstance(arch, str) or not arch:
            if "arch" not in kwargs:
                raise ReporterError(
                    f"{source}: the model metadata has no 'arch' (architecture name), so the "
                    "model cannot be rebuilt. Pass the weights with --arch, or re-save the model "
                    "with `reporter train`."
                )
            raise bad("arch", kwargs.get("arch"), "an architecture name such as 'resnet18'")
        kwargs["arch"] = arch
        class_names = kwargs.get("class_names", [])
        if class_names is None:
            class_names = []
        if not isinstance(class_names, (list, tuple)) or not all(
            isinstance(c, (str, int)) and not isinstance(c, bool) for c in class_names
        ):
            raise bad("class_names", class_names, "a list of class names")
        kwargs["class_names"] = [str(c) for c in class_names]
        if "num_classes" not in kwargs and class_names:
            kwargs["num_classes"] = len(class_names)
        n = kwargs.get("num_classes")
        if not _is_int(n) or n < 1:
            raise bad("num_classes", n, "a positive integer")
        if class_names and len(class_names) != n:
            raise ReporterError(
                f"{source}: the metadata has {len(class_names)} class names but the model "
                f"outputs {n} classes (num_classes = {n}). Give one class name per output."
            )
        if not class_names:
            kwargs["class_names"] = [str(i) for i in range(n)]
        if "input_size" in kwargs:
            size = kwargs["input_size"]
            if _is_int(size):
                size = [size, size]
            if (
                not isinstance(size, (list, tuple))
                or len(size) != 2
                or not all(_is_int(s) and s > 0 for s in size)
            ):
                raise bad(
                    "input_size", kwargs["input_size"], "two positive integers [height, width]"
                )
            kwargs["input_size"] = (int(size[0]), int(size[1]))
        channels = kwargs.get("channels", 1)
        if not _is_int(channels) or channels < 1:
            raise bad("channels", channels, "a positive integer (1 grey, 3 RGB)")
        for key in ("mean", "std"):
            if key not in kwargs:
                continue
            value = kwargs[key]
            if _is_number(value):
                value = [value]
            if (
                not isinstance(value, (list, tuple))
                or len(value) not in (1, channels)
                or not all(_is_number(v) for v in value)
                or (key == "std" and not all(v > 0 for v in value))
            ):
                what = "positive numbers" if key == "std" else "numbers"
                raise bad(key, kwargs[key], f"a list of 1 or {channels} {what}")
            kwargs[key] = [float(v) for v in value]
        for key in ("data_fingerprint", "reporter_version"):
            if key in kwargs:
                kwargs[key] = str(kwargs[key])
        if not isinstance(kwargs.get("extra", {}), dict):
            kwargs["extra"] = {}
        if kwargs.get("resize", "cover") not in ("cover", "stretch"):
            raise bad("resize", kwargs["resize"], "'cover' or 'stretch'")
        crop = kwargs.get("crop", 1.0)
        if not _is_number(crop) or not 0.0 < crop <= 1.0:
            raise bad("crop", crop, "a number in (0, 1]")
        kwargs["crop"] = float(crop)
        if kwargs.get("channel_order", "rgb") not in ("rgb", "bgr"):
            raise bad("channel_order", kwargs["channel_order"], "'rgb' or 'bgr'")
        if not isinstance(kwargs.get("grayscale", False), bool):
            raise bad("grayscale", kwargs["grayscale"], "true or false")
        arch_kwargs = kwargs.get("arch_kwargs", {})
        if not isinstance(arch_kwargs, dict) or not all(isinstance(k, str) for k in arch_kwargs):
            raise bad("arch_kwargs", arch_kwargs, "a table of keyword arguments")
        return cls(**kwargs)
