"""Hook ownership: register forward hooks, always remove them, and put the model back as it was.

Every piece of reporter that needs a layer's output (the CAM engine, feature visualization, the
layer listing) goes through :class:`ActivationRecorder`, so the rules live in one place:
hooks are removed in ``finally`` (also when the model raises mid-forward), ``remove()`` is safe to
call twice, and the model's ``training`` flags and parameters' ``requires_grad`` are restored.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from reporter.errors import ReporterError

__all__ = [
    "ActivationRecorder",
    "eval_mode",
    "first_tensor",
    "frozen_parameters",
    "modules_by_name",
    "unknown_layer_message",
]


def unknown_layer_message(model: nn.Module, name: str, candidates: list[str] | None = None) -> str:
    """A message for an unknown layer name that lists the closest valid names."""
    names = candidates or [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    if not close:
        close = names[-5:]
    return (
        f"Unknown layer {name!r}. Closest valid names: {', '.join(close)}. "
        "Run `reporter layers MODEL` to list every layer."
    )


def modules_by_name(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """The modules of ``model`` with these dotted names, in order.

    Raises:
        ReporterError: for a name that is not in ``model.named_modules()``, listing the closest.
    """
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for name in names:
        if name not in modules:
            raise ReporterError(unknown_layer_message(model, name, [n for n in modules if n]))
        out[name] = modules[name]
    return out


def first_tensor(output: Any) -> torch.Tensor | None:
    """Return the tensor a module produced (the first one, for tuple or dict outputs)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        for item in output.values():
            found = first_tensor(item)
            if found is not None:
                return found
    return None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every submodule's ``training`` flag afterwards."""
    saved = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        yield model
    finally:
        for name, m in model.named_modules():
            if name in saved:
                m.training = saved[name]


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Set ``requires_grad=False`` on every parameter and restore the flags afterwards.

    Gradients with respect to activations do not need parameter gradients; freezing avoids
    accumulating ``.grad`` on the caller's model and saves memory.
    """
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


class ActivationRecorder:
    """Context manager recording the outputs of named modules during forward passes.

    Args:
        model: The model to hook.
        layers: Dotted module names, as in ``model.named_modules()``.
        detach: Store detached outputs (for gradient-free uses).

    Raises:
        ReporterError: for a name that is not a module of ``model``.

    After a forward pass, ``recorder.outputs[name]`` holds the last output of each layer.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], *, detach: bool = False) -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.detach = detach
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._modules = modules_by_name(model, self.layers)

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = first_tensor(output)
            if tensor is not None:
                self.outputs[name] = tensor.detach() if self.detach else tensor

        return hook

    def register(self) -> ActivationRecorder:
        """Register one forward hook per layer (idempotent)."""
        if not self._handles:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def remove(self) -> None:
        """Remove every hook this recorder registered. Safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()

    def clear(self) -> None:
        """Forget the recorded outputs (frees the graph they hold)."""
        self.outputs = {}

    def __enter__(self) -> ActivationRecorder:
        return self.register()

    def __exit__(self, *exc: object) -> None:
        try:
            self.remove()
        finally:
            self.clear()
