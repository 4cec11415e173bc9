"""Memory format: run convolutions channels-last (NHWC) on the CPU when it is safe.

oneDNN, PyTorch's CPU convolution backend, is faster on channels-last tensors (measured in
:doc:`performance`, ``benchmarks/bench_layout.py``); a convolution picks the format when its
input *or* its weight is channels-last, and its output keeps it.

Three ways to use it:

- :func:`use_channels_last` converts the 4-D weights of a model the caller owns (the audit
  pipeline's loaded or trained model). This also helps one-channel inputs, whose two formats
  are the same.
- :func:`try_channels_last` does the same and returns the converted parameters, so that a
  caller that does not own the model can put them back (:func:`restore_weights`):
  ``CamEngine`` keeps a user's weights channels-last only while it is open (``with``; otherwise
  every convolution re-orders its weights on every call). :func:`channels_last_works` only
  checks; the engine then feeds channels-last inputs alone.

A model may depend on the default format (``x.view(...)`` on a feature map raises on a
channels-last tensor; a few custom layers assume contiguous memory), so the format is used only
when a probe forward pass on one seeded image runs and gives the same logits as the default
format. The probe's verdict is cached per model, input shape, device and dtype
(:class:`reporter.nn.cache.PerModelCache`: dropped when the model's layers or parameters are
replaced), so opening ``CamEngine`` once per batch probes once. CUDA keeps the default format:
fp32 cuDNN gains little from NHWC and we have not measured it. Set ``REPORTER_CHANNELS_LAST=0``
to turn the format off everywhere.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import Tensor, nn

from reporter.nn.cache import PerModelCache, input_key
from reporter.nn.device import model_device
from reporter.nn.hooks import eval_mode, first_tensor

__all__ = [
    "ENV_VAR",
    "channels_last_enabled",
    "channels_last_works",
    "restore_weights",
    "to_channels_last",
    "try_channels_last",
    "use_channels_last",
    "weights_to_channels_last",
]

log = logging.getLogger(__name__)

ENV_VAR = "REPORTER_CHANNELS_LAST"
"""Environment variable: ``0`` (or ``false``/``off``/``no``) keeps the default layout."""

_RTOL = 1e-3
_ATOL = 1e-3

_VERDICTS: PerModelCache[bool] = PerModelCache()
"""Whether the probe found channels-last safe, per model and input (shape, device, dtype)."""


def channels_last_enabled(device: torch.device | str) -> bool:
    """Whether channels-last is worth trying on ``device`` (the CPU, unless turned off)."""
    if os.environ.get(ENV_VAR, "").strip().lower() in {"0", "false", "off", "no"}:
        return False
    return torch.device(device).type == "cpu"


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` in channels-last layout if it is a 4-D batch (a no-op when it already is)."""
    if x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


def _eligible(model: nn.Module, sample_shape: tuple[int, ...]) -> bool:
    """A 4-D input, the layout turned on for the model's device, and convolution weights."""
    if len(sample_shape) != 4 or not channels_last_enabled(model_device(model)):
        return False
    return any(p.dim() == 4 for p in model.parameters())


def _probe_sample(sample_shape: tuple[int, ...], device: torch.device) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn((1, *sample_shape[1:]), generator=generator).to(device)


def _probe_key(model: nn.Module, sample_shape: tuple[int, ...]) -> object:
    params = [p for p in model.parameters() if p.is_floating_point()]
    dtype = params[0].dtype if params else torch.get_default_dtype()
    return input_key(sample_shape[1:], model_device(model), dtype)


def _same(ref: Tensor | None, out: Tensor | None) -> bool:
    if ref is None or out is None or ref.shape != out.shape or not ref.is_floating_point():
        return False
    if not bool(torch.isfinite(ref).all()):
        return False
    scale = max(1.0, float(ref.abs().max()))
    return bool(torch.allclose(out.float(), ref.float(), rtol=_RTOL, atol=_ATOL * scale))


def weights_to_channels_last(model: nn.Module) -> list[nn.Parameter]:
    """Store the model's 4-D parameters channels-last; return those that changed.

    Only ``param.data`` is replaced (the ``Parameter`` objects, their values and
    ``requires_grad`` stay), so :func:`restore_weights` can undo it exactly.
    """
    changed = []
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last):
                p.data = p.data.contiguous(memory_format=torch.channels_last)
                changed.append(p)
    return changed


def restore_weights(params: list[nn.Parameter]) -> None:
    """Undo :func:`weights_to_channels_last` for ``params``."""
    with torch.no_grad():
        for p in params:
            p.data = p.data.contiguous()


def _probe(model: nn.Module, sample_shape: tuple[int, ...]) -> list[nn.Parameter] | None:
    """Run the probe: default format, then channels-last weights and input, on one image.

    Keeps the weights channels-last and returns the converted parameters when the logits agree;
    otherwise leaves the model exactly as it was and returns None.
    """
    x = _probe_sample(sample_shape, model_device(model))
    changed: list[nn.Parameter] = []
    with eval_mode(model), torch.no_grad():
        try:
            ref = first_tensor(model(x))
        except Exception as exc:  # noqa: BLE001 - a model that cannot run is not our call here
            log.debug("layout probe: the model fails on a random sample: %s", exc)
            return None
        try:
            changed = weights_to_channels_last(model)
            out = first_tensor(model(to_channels_last(x)))
        except Exception as exc:  # noqa: BLE001 - e.g. x.view() on an NHWC feature map
            log.debug("layout probe: channels-last fails (%s); keeping the default layout", exc)
            out = None
        if not _same(ref, out):
            restore_weights(changed)
            log.debug("layout probe: keeping the default layout for this model")
            return None
    return changed


def try_channels_last(model: nn.Module, sample_shape: tuple[int, ...]) -> list[nn.Parameter] | None:
    """Store the weights channels-last if a probe pass agrees; return the converted parameters.

    The first time for a model and input shape, runs the model on one seeded image with the
    default format, then with channels-last weights and input; the verdict is cached
    (see the module docstring), so later calls only convert the weights. When the logits agree
    the weights stay channels-last and the parameters that changed are returned (for
    :func:`restore_weights`); otherwise (or when the format does not apply: see
    :func:`channels_last_works`) the model is left exactly as it was and the result is None.
    """
    sample_shape = tuple(int(s) for s in sample_shape)
    if not _eligible(model, sample_shape):
        return None
    key = _probe_key(model, sample_shape)
    verdict = _VERDICTS.get(model, key)
    if verdict is None:
        changed = _probe(model, sample_shape)
        _VERDICTS.put(model, key, changed is not None)
        return changed
    return weights_to_channels_last(model) if verdict else None


def channels_last_works(model: nn.Module, sample: Tensor) -> bool:
    """Whether ``model`` gives the same logits on channels-last inputs (model left unchanged).

    Args:
        model: A classifier on its device.
        sample: An input batch (only its shape is used; the probe draws seeded random inputs).

    Returns:
        False on CUDA, when turned off with ``REPORTER_CHANNELS_LAST=0``, for models without
        convolution weights or non-4-D inputs, and whenever the probe fails or disagrees. The
        verdict is cached like :func:`try_channels_last`'s.
    """
    shape = tuple(int(s) for s in sample.shape)
    if not _eligible(model, shape):
        return False
    verdict = _VERDICTS.get(model, _probe_key(model, shape))
    if verdict is not None:
        return verdict
    changed = try_channels_last(model, shape)
    if changed is None:
        return False
    restore_weights(changed)
    return True


def use_channels_last(model: nn.Module, sample_shape: tuple[int, ...]) -> bool:
    """Convert a model the caller owns to channels-last weights when it is safe (CPU only).

    Args:
        model: The model, already on its device. Only the memory layout of its 4-D parameters
            changes, never their values or the ``Parameter`` objects.
        sample_shape: ``(B, C, H, W)`` of the inputs it will get.

    Returns:
        True when the model now holds channels-last weights.
    """
    done = try_channels_last(model, tuple(sample_shape)) is not None
    if done:
        log.debug("using channels-last weights on the CPU")
    return done
