"""CamEngine: every CAM method for every requested layer from one forward and one backward pass.

One forward pass records the activations of all hooked layers (forward hooks only), then a single
``torch.autograd.grad`` of the summed target logits gives the gradients for all of them at once
(no parameter gradients, no backward hooks). Every map is then pure tensor math
(:mod:`reporter.explain.mapmath`) on the same activations and gradients; which method needs the
backward pass, the final linear layer or Score-CAM's masked forward passes (run in batches under
inference mode) comes from :mod:`reporter.explain.registry`, and the backward pass is skipped
when no method (and no recorded layer) needs it.

Example:
    >>> with CamEngine(model, layers=["layer3", "layer4"], methods=["gradcam", "eigencam"]) as e:
    ...     result = e(images)                      # targets=None: the predicted class
    ...     heat = result.upsampled("gradcam", "layer4")   # [B, H, W] in [0, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from reporter.errors import ReporterError
from reporter.explain.graphs import GraphedFunction, cuda_graphs_enabled
from reporter.explain.mapmath import MapMath, split_flat
from reporter.explain.registry import METHODS, get_method
from reporter.explain.result import CamResult, as_grid
from reporter.explain.scorecam import scorecam_scores
from reporter.explain.targets import TargetSpec, resolve_targets, target_scores
from reporter.nn.device import model_devices, resolve_device
from reporter.nn.hooks import (
    ActivationRecorder,
    eval_mode,
    first_tensor,
    frozen_parameters,
    modules_by_name,
)
from reporter.nn.layers import LayerInfo, resolve_layers, trace_layers
from reporter.nn.memory_format import (
    channels_last_works,
    restore_weights,
    to_channels_last,
    try_channels_last,
    weights_to_channels_last,
)

__all__ = ["CamEngine"]

log = logging.getLogger(__name__)


class _GradRecorder(ActivationRecorder):
    """Activation recorder that can be paused and makes the first hooked output a grad leaf.

    With frozen parameters and an input that does not require grad, nothing in the forward pass
    would build a graph; making the (first) hooked output require grad starts the graph there,
    so the backward pass reaches exactly the hooked layers and nothing before them.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str]) -> None:
        super().__init__(model, layers, detach=False)
        self.active = False  # only during the engine's own forward pass
        self.make_leaf = True

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not self.active:
                return
            tensor = first_tensor(output)
            if tensor is None:
                return
            if (
                self.make_leaf
                and torch.is_grad_enabled()
                and not tensor.requires_grad
                and tensor.is_floating_point()
            ):
                tensor.requires_grad_(True)
            self.outputs[name] = tensor

        return hook


class CamEngine:
    """Compute class activation maps for several methods and layers in one pass.

    Args:
        model: A classifier returning logits ``[B, K]``.
        layers: Dotted module names (``"layer4"``, ``"layer4.1.conv2"``) and/or ``"auto"`` (the
            last layer with a spatial output, found by a dry run and logged).
        methods: Names from :data:`reporter.explain.registry.METHODS`.
        device: Where to compute; default: the model's device if it is not the CPU, else CUDA
            when available, else the CPU. The model is moved there while the engine is open
            and moved back on close.
        record: Extra layers whose activations and gradients are kept in the result (for
            feature attribution), without maps.
        scorecam_batch: Masked images per forward pass for ``scorecam``.
        input_shape: ``(C, H, W)`` of the inputs; with it the layers are resolved (one dry run)
            and hooked on ``__enter__``, otherwise on the first call.
        channels_last: Feed the model channels-last (NHWC) inputs, which oneDNN's CPU
            convolutions run faster (:doc:`performance`). ``None`` (default): on the CPU, when
            a probe forward pass shows the model gives the same logits that way
            (:mod:`reporter.nn.memory_format`; the verdict is cached per model, so opening an
            engine once per batch probes once). While the engine is open (``with``) the
            model's 4-D weights are stored channels-last too, and put back on exit; values
            never change.
        cuda_graphs: On CUDA, replay the map math (everything after the backward pass) as
            recorded CUDA graphs, one per batch shape, checked against an eager run when
            recorded (:mod:`reporter.explain.graphs`). ``None`` (default): on, unless
            ``REPORTER_CUDA_GRAPHS=0``. No effect on the CPU.

    Use it as a context manager: hooks are removed, and the model's device, ``training`` flags
    and ``requires_grad`` flags put back, on exit, also when the model raises. Called outside a
    ``with`` block it hooks and unhooks around each call.

    Raises:
        ReporterError: for an unknown method or layer name.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | str = ("auto",),
        methods: Sequence[str] | str = ("gradcam",),
        *,
        device: str | torch.device | None = None,
        record: Sequence[str] = (),
        scorecam_batch: int = 64,
        input_shape: Sequence[int] | None = None,
        channels_last: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        self.model = model
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs_enabled() if cuda_graphs is None else bool(cuda_graphs)
        self.layer_requests = _split_names(layers) or ["auto"]
        self.record_requests = _split_names(record)
        self.methods = list(dict.fromkeys(_split_names(methods)))
        if not self.methods:
            raise ReporterError(f"No CAM method given; choose from: {', '.join(METHODS)}.")
        self._specs = [get_method(m) for m in self.methods]
        named = [n for n in self.layer_requests + self.record_requests if n != "auto"]
        modules_by_name(model, named)  # unknown names fail here, before any hook
        if self._needs_head and not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ReporterError(_cam_error("the model has no nn.Linear layer"))
        if scorecam_batch < 1:
            raise ReporterError(f"scorecam_batch must be at least 1, got {scorecam_batch}.")
        self.scorecam_batch = int(scorecam_batch)
        self.device = resolve_device(device, model=model)
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape else None
        self.layers: list[str] = []
        self.recorded: list[str] = []
        self.layer_map: dict[str, str] = {}
        self._infos: list[LayerInfo] | None = None
        self._fc: nn.Linear | None = None
        self._cam_checked: set[str] = set()
        self._recorder: _GradRecorder | None = None
        self._nhwc_weights: list[nn.Parameter] = []
        self._math: MapMath | None = None
        self._graphed: GraphedFunction | None = None
        self._home: torch.device | None = None
        self._entered = False

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> CamEngine:
        try:
            self._entered = True
            self._move_model()
            if self.input_shape is not None:
                sample = torch.zeros((1, *self.input_shape), device=self.device)
                self._setup(sample)
                self._register()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove hooks and move the model back to its device. Safe to call more than once."""
        try:
            if self._recorder is not None:
                self._recorder.remove()
                self._recorder.clear()
            if self._graphed is not None:
                self._graphed.clear()
            restore_weights(self._nhwc_weights)
            self._nhwc_weights = []
        finally:
            self._entered = False
            self._restore_model()

    def _move_model(self) -> None:
        devices = model_devices(self.model)
        if len(devices) == 1 and (current := devices.pop()) != self.device:
            self._home = current
            self.model.to(self.device)

    def _restore_model(self) -> None:
        if self._home is not None:
            home, self._home = self._home, None
            self.model.to(home)

    # -- setup -----------------------------------------------------------------------------
    @property
    def _needs_grad(self) -> bool:
        return any(s.needs_gradients for s in self._specs) or bool(self.record_requests)

    @property
    def _needs_head(self) -> bool:
        return any(s.kind == "head" for s in self._specs)

    def _setup(self, sample: Tensor) -> None:
        """Dry run: resolve ``auto``, in-place outputs and record layers; find the final Linear."""
        if self._infos is not None:
            return
        infos = trace_layers(self.model, sample)
        for name in dict.fromkeys(self.layer_requests + self.record_requests):
            self.layer_map[name] = resolve_layers(self.model, [name], sample, infos=infos)[0][0]
        self.layers = list(dict.fromkeys(self.layer_map[n] for n in self.layer_requests))
        self.recorded = list(dict.fromkeys(self.layer_map[n] for n in self.record_requests))
        if self._needs_head:
            linears = [i for i in infos if i.type == "Linear" and i.calls >= 1]
            if linears:
                last = max(linears, key=lambda i: i.order)
                module = dict(self.model.named_modules())[last.name]
                if isinstance(module, nn.Linear):
                    self._fc = module
        self._infos = infos
        self._math = MapMath(self.methods, len(self.layers))
        self._graphed = GraphedFunction(self._math, enabled=self.cuda_graphs)
        keeps_weights = self._entered and self.device.type == "cpu"
        if self.channels_last is None and keeps_weights:
            changed = try_channels_last(self.model, tuple(sample.shape))
            self.channels_last = changed is not None
            self._nhwc_weights = changed or []
        elif self.channels_last is None:
            self.channels_last = channels_last_works(self.model, sample)
        elif self.channels_last and keeps_weights:
            self._nhwc_weights = weights_to_channels_last(self.model)
        self._recorder = _GradRecorder(self.model, self.layers + self.recorded)

    def _register(self) -> None:
        if self._recorder is not None:
            self._recorder.register()

    # -- the call --------------------------------------------------------------------------
    def __call__(self, images: Tensor, targets: TargetSpec = None) -> CamResult:
        """Compute every requested map for a batch.

        Args:
            images: ``[B, C, H, W]`` (or one image ``[C, H, W]``).
            targets: ``None`` for the predicted class, an int for one class for all images, or
                one class index per image (``[B]`` tensor or sequence).

        Returns:
            A :class:`CamResult` with CPU tensors.
        """
        if not isinstance(images, Tensor):
            raise ReporterError(f"Images must be a torch.Tensor, got {type(images).__name__}.")
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[0] == 0:
            raise ReporterError(
                f"Images must be a non-empty batch [B, C, H, W], got shape {tuple(images.shape)}."
            )
        with ExitStack() as stack:
            if not self._entered:
                stack.callback(self.close)
                self._move_model()
            # Gradients are needed even when the caller is in inference mode or no_grad.
            stack.enter_context(torch.inference_mode(False))
            if images.is_inference():
                images = images.clone()
            images = images.to(self.device, non_blocking=True).detach()
            self._setup(images[:1])
            if self.channels_last:
                images = to_channels_last(images)
            recorder = self._recorder
            assert recorder is not None
            recorder.register()
            stack.callback(recorder.clear)
            stack.enter_context(eval_mode(self.model))
            stack.enter_context(frozen_parameters(self.model))
            return self._compute(images, targets, recorder)
        raise AssertionError("unreachable")  # pragma: no cover

    def _forward(self, images: Tensor, recorder: _GradRecorder, grad: bool) -> Tensor:
        recorder.clear()
        recorder.active = True
        try:
            with torch.set_grad_enabled(grad):
                if grad and not recorder.make_leaf:
                    images = images.detach().requires_grad_(True)
                try:
                    out = self.model(images)
                except RuntimeError as exc:
                    if not (grad and recorder.make_leaf and "leaf Variable" in str(exc)):
                        raise
                    # A hooked output is modified in place later in the forward pass: fall back
                    # to a graph from the input (slower, but correct for such models).
                    log.warning("a hooked output is modified in place; recording the full graph")
                    recorder.make_leaf = False
                    recorder.clear()
                    out = self.model(images.detach().requires_grad_(True))
        finally:
            recorder.active = False
        logits = first_tensor(out)
        if logits is None or logits.dim() != 2:
            shape = None if logits is None else tuple(logits.shape)
            raise ReporterError(f"The model must return logits [B, K]; got shape {shape}.")
        return logits

    def _compute(self, images: Tensor, targets: TargetSpec, recorder: _GradRecorder) -> CamResult:
        input_size = (int(images.shape[-2]), int(images.shape[-1]))
        needs_grad = self._needs_grad
        logits = self._forward(images, recorder, needs_grad)
        hooked = self.layers + [n for n in self.recorded if n not in self.layers]
        missing = [n for n in hooked if n not in recorder.outputs]
        if missing:
            raise ReporterError(f"Layer {missing[0]!r} produced no tensor in the forward pass.")
        raw = {n: recorder.outputs[n] for n in hooked}
        target_idx = resolve_targets(targets, logits)

        grads: dict[str, Tensor] = {}
        if needs_grad:
            if not logits.requires_grad:
                raise ReporterError(
                    "The model's output does not depend on the hooked layers' outputs, so no "
                    "gradient can be computed; check the layer names."
                )
            wanted = [n for n in hooked if raw[n].requires_grad]
            with torch.enable_grad():
                score = target_scores(logits, target_idx).sum()
                found = torch.autograd.grad(score, [raw[n] for n in wanted], allow_unused=True)
            for name, g in zip(wanted, found, strict=True):
                grads[name] = torch.zeros_like(raw[name]) if g is None else g
            for name in hooked:
                grads.setdefault(name, torch.zeros_like(raw[name]))

        with torch.no_grad():
            logits = logits.detach()
            acts = {n: as_grid(raw[n].detach(), input_size).float() for n in hooked}
            grid_grads = {n: as_grid(g, input_size).float() for n, g in grads.items()}
            del raw, grads
            inputs = [acts[layer] for layer in self.layers]
            assert self._math is not None and self._graphed is not None
            if self._math.grad_methods:
                inputs += [grid_grads[layer] for layer in self.layers]
            if self._math.needs_scores:
                inputs += [
                    scorecam_scores(
                        self._logits_of,
                        images,
                        acts[layer],
                        target_idx,
                        batch_size=self.scorecam_batch,
                    )
                    for layer in self.layers
                ]
            inputs += [logits, target_idx]
            if self._math.needs_head:
                inputs.append(self._cam_weight(acts, logits))
            flat = self._graphed(*inputs)
            if flat.device.type != "cpu":
                flat = flat.cpu()
            elif self._graphed.replayed_last:
                flat = flat.clone()  # a recorded graph's output is overwritten by the next call
            maps, flags, logits_cpu, targets_cpu = split_flat(
                flat,
                self.methods,
                self.layers,
                [tuple(acts[layer].shape[:1] + acts[layer].shape[2:]) for layer in self.layers],
                tuple(logits.shape),
            )
        return CamResult(
            maps=maps,
            flags=flags,
            logits=logits_cpu,
            targets=targets_cpu,
            input_size=input_size,
            layers=list(self.layers),
            _raw_activations=acts,
            _raw_gradients=grid_grads,
        )

    def _logits_of(self, batch: Tensor) -> Tensor:
        out = first_tensor(self.model(batch))
        if out is None:
            raise ReporterError("The model returned no tensor.")
        return out

    def _cam_weight(self, acts: dict[str, Tensor], logits: Tensor) -> Tensor:
        """The final linear layer's weight ``[K, C]``, checked (once per layer) to be a CAM head."""
        fc = self._fc
        if fc is None:
            raise ReporterError(_cam_error("no final nn.Linear layer was found"))
        weight = fc.weight.detach().float()
        for layer in self.layers:
            a = acts[layer]
            if weight.shape[1] != a.shape[1] or weight.shape[0] != logits.shape[1]:
                raise ReporterError(
                    _cam_error(
                        f"layer {layer!r} has {a.shape[1]} channels but the final linear layer "
                        f"maps {weight.shape[1]} features to {weight.shape[0]} outputs"
                    )
                )
            if layer in self._cam_checked:
                continue
            pooled = a.mean(dim=(2, 3)) @ weight.t()
            if fc.bias is not None:
                pooled = pooled + fc.bias.detach().float()
            scale = max(1.0, float(logits.abs().max()))
            if not torch.allclose(pooled, logits.float(), rtol=1e-3, atol=1e-4 * scale):
                raise ReporterError(
                    _cam_error(
                        f"the logits are not the final linear layer applied to the global "
                        f"average of layer {layer!r}"
                    )
                )
            self._cam_checked.add(layer)
        return weight


def _cam_error(reason: str) -> str:
    return (
        f"Method 'cam' needs a network that ends in global average pooling of the chosen layer "
        f"and one linear layer, but {reason}. Use 'gradcam' instead (it equals CAM up to a "
        "constant factor on such networks and works on any architecture)."
    )


def _split_names(names: Sequence[str] | str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        out.extend(part.strip() for part in str(item).split(",") if part.strip())
    return out
