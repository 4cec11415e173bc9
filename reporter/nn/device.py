"""Device selection: which device a model is on, and which one to compute on."""

from __future__ import annotations

import torch
from torch import nn

from reporter.errors import ReporterError

__all__ = ["model_device", "model_devices", "resolve_device"]


def resolve_device(
    name: str | torch.device | None = None, *, model: nn.Module | None = None
) -> torch.device:
    """The device to compute on.

    Args:
        name: ``None``/``"auto"``: the model's device when it is on an accelerator (``model``
            given and on one device), else CUDA when available, else the CPU. Otherwise the
            named device (``cpu``, ``cuda``, ``cuda:N``, a ``torch.device``).
        model: The model that will run there, for the automatic choice.

    Returns:
        The device; a bare ``cuda`` gets the current CUDA device's index, so that two names of
        the same GPU compare equal.

    Raises:
        ReporterError: for an unknown device name, or CUDA asked for without a CUDA GPU.
    """
    if name is None or (isinstance(name, str) and name in ("", "auto")):
        if model is not None:
            devices = model_devices(model)
            if len(devices) == 1 and next(iter(devices)).type != "cpu":
                return devices.pop()
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ReporterError(
                f"Unknown device {name!r} (use auto, cpu, cuda or cuda:N)."
            ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ReporterError("--device cuda was asked for but no CUDA GPU is available.")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def model_devices(model: nn.Module) -> set[torch.device]:
    """Every device holding one of the model's parameters or buffers (empty when it has none)."""
    return {t.device for t in (*model.parameters(), *model.buffers())}


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
