"""Model metadata: what preprocessing and reporting need to know about a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["ModelMeta"]


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

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of builtins, safe for ``torch.load(weights_only=True)`` and JSON."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        """Build from :meth:`to_dict` output, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "input_size" in kwargs:
            kwargs["input_size"] = tuple(int(s) for s in kwargs["input_size"])
        kwargs["class_names"] = [str(c) for c in kwargs.get("class_names", [])]
        return cls(**kwargs)
