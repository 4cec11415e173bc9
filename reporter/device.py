"""Device selection."""

from __future__ import annotations

import torch

from reporter.errors import ReporterError

__all__ = ["model_device", "resolve_device"]


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else CPU; otherwise the named device."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ReporterError(f"Unknown device {name!r} (use auto, cpu, cuda or cuda:N).") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReporterError("--device cuda was asked for but no CUDA GPU is available.")
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
