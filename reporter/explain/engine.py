"""CamEngine: every CAM method for every requested layer from one forward and one backward pass.

One forward pass records the activations of all hooked layers (forward hooks only), then a single
``torch.autograd.grad`` of the summed target logits gives the gradients for all of them at once
(no parameter gradients, no backward hooks). Every gradient method is then pure tensor math
(:mod:`reporter.explain.methods`) on the same activations and gradients; ``eigencam`` needs no
gradient, ``scorecam`` runs its masked forward passes in batches under inference mode, and the
backward pass is skipped when no method (and no recorded layer) needs it.

Example:
    >>> with CamEngine(model, layers=["layer3", "layer4"], methods=["gradcam", "eigencam"]) as e:
    ...     result = e(images)                      # targets=None: the predicted class
    ...     heat = result.upsampled("gradcam", "layer4")   # [B, H, W] in [0, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reporter.errors import ReporterError
from reporter.explain import methods as M
from reporter.explain.graphs import GraphedFunction, cuda_graphs_enabled
from reporter.explain.scorecam import scorecam_scores
from reporter.explain.targets import TargetSpec, resolve_targets, target_scores
from reporter.hooks import ActivationRecorder, eval_mode, first_tensor, frozen_parameters
from reporter.layers import (
    LayerInfo,
    resolve_layers,
    token_grid,
    trace_layers,
    unknown_layer_message,
)
from reporter.layout import (
    channels_last_works,
    restore_weights,
    to_channels_last,
    try_channels_last,
    weights_to_channels_last,
)

__all__ = [
    "CamEngine",
    "CamResult",
    "explain_batches",
    "normalize_maps",
    "tokens_to_grid",
    "upsample_maps",
]

log = logging.getLogger(__name__)

_GRADIENT_FREE = frozenset({"cam", "eigencam", "scorecam"})


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map to ``[0, 1]``; NaN/inf become 0 and constant maps become 0.

    Args:
        maps: ``[..., H, W]`` maps (any leading axes).

    Returns:
        A new float tensor of the same shape.
    """
    x = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, (flat - lo) / safe, torch.zeros_like(flat))
    return out.reshape(x.shape)


def _size_keeping_aspect(size: int | Sequence[int], input_size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        height, width = input_size
        short = min(height, width)
        return max(1, round(height * size / short)), max(1, round(width * size / short))
    h, w = (int(s) for s in size)
    return h, w


def upsample_maps(maps: Tensor, size: int | Sequence[int]) -> Tensor:
    """Bilinearly upsample maps ``[B, h, w]`` (or ``[h, w]``) to ``size``.

    Args:
        maps: Maps at the layer's resolution.
        size: ``(H, W)``, or an int for the shorter side (the longer follows the maps' aspect).

    Returns:
        Float maps ``[B, H, W]`` (``[H, W]`` for a single map). Uses half-pixel centres
        (``align_corners=False``), like OpenCV's ``resize``.
    """
    single = maps.dim() == 2
    x = maps.float().reshape(-1, 1, maps.shape[-2], maps.shape[-1])
    target = _size_keeping_aspect(size, (int(maps.shape[-2]), int(maps.shape[-1])))
    if target != (int(x.shape[-2]), int(x.shape[-1])):
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
    x = x[:, 0]
    return x[0] if single else x


def tokens_to_grid(tokens: Tensor, input_size: tuple[int, int]) -> Tensor:
    """Reshape transformer tokens ``[B, 1+N, C]`` or ``[B, N, C]`` to ``[B, C, gh, gw]``.

    The class token (when ``N + 1`` tokens fit the patch grid) is dropped; the grid follows from
    the token count and the input size (:func:`reporter.layers.token_grid`).

    Raises:
        ReporterError: when the token count matches no patch grid of ``input_size``.
    """
    grid = token_grid(int(tokens.shape[1]), input_size)
    if grid is None:
        raise ReporterError(
            f"Cannot map {tokens.shape[1]} tokens onto a patch grid of an input of size "
            f"{input_size}; choose a layer with a spatial output."
        )
    gh, gw, has_cls = grid
    body = tokens[:, 1:] if has_cls else tokens
    return body.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)


def _as_grid(tensor: Tensor, input_size: tuple[int, int]) -> Tensor:
    if tensor.dim() == 4:
        return tensor
    if tensor.dim() == 3:
        return tokens_to_grid(tensor, input_size)
    raise ReporterError(f"A hooked layer produced shape {tuple(tensor.shape)}, not [B, C, h, w].")


@dataclass
class CamResult:
    """What one :class:`CamEngine` call returns. Everything public is on the CPU.

    Attributes:
        maps: ``maps[method][layer]`` is a float tensor ``[B, h, w]`` at the layer's resolution,
            after the method's ReLU, not normalised.
        flags: ``flags[method][layer]`` is a bool tensor ``[B]``, True where the map is all zero
            or holds NaN/inf (such a map must not be drawn as if it were a real, blank answer).
        logits: The model's output ``[B, K]`` from the same forward pass.
        targets: The explained class of each image, ``[B]`` long.
        input_size: ``(H, W)`` of the input images.
        layers: The resolved layer names, in the requested order (``auto`` and in-place outputs
            resolved), which key ``maps[method]``.
    """

    maps: dict[str, dict[str, Tensor]]
    flags: dict[str, dict[str, Tensor]]
    logits: Tensor
    targets: Tensor
    input_size: tuple[int, int]
    layers: list[str]
    _raw_activations: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _raw_gradients: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _cpu_activations: dict[str, Tensor] | None = field(default=None, repr=False)
    _cpu_gradients: dict[str, Tensor] | None = field(default=None, repr=False)

    @property
    def methods(self) -> list[str]:
        """The computed method names."""
        return list(self.maps)

    @property
    def predictions(self) -> Tensor:
        """The predicted class of each image, ``[B]``."""
        return self.logits.argmax(dim=1)

    @property
    def activations(self) -> dict[str, Tensor]:
        """Detached CPU activations ``[B, C, h, w]`` of every hooked layer (``record`` too).

        Copied from the device on first access only.
        """
        if self._cpu_activations is None:
            self._cpu_activations = {k: v.cpu() for k, v in self._raw_activations.items()}
        return self._cpu_activations

    @property
    def gradients(self) -> dict[str, Tensor]:
        """Detached CPU gradients of the target scores, like :attr:`activations`.

        Empty when no backward pass ran (only gradient-free methods and no ``record`` layers).
        """
        if self._cpu_gradients is None:
            self._cpu_gradients = {k: v.cpu() for k, v in self._raw_gradients.items()}
        return self._cpu_gradients

    def upsampled(
        self,
        method: str,
        layer: str,
        size: int | Sequence[int] | None = None,
        normalize: bool = True,
    ) -> Tensor:
        """A map upsampled (bilinear) to the input size or ``size``, normalised per image.

        Args:
            method: A computed method name.
            layer: A resolved layer name (see :attr:`layers`).
            size: ``(H, W)``; an int for the shorter side with the input's aspect ratio kept;
                ``None`` for the input size.
            normalize: Min-max normalise each map to ``[0, 1]`` (NaN-safe).

        Returns:
            ``[B, H, W]`` float maps.
        """
        try:
            maps = self.maps[method][layer]
        except KeyError:
            raise ReporterError(
                f"No map for method {method!r} and layer {layer!r}; computed methods: "
                f"{', '.join(self.maps)}; layers: {', '.join(self.layers)}."
            ) from None
        target = self.input_size if size is None else _size_keeping_aspect(size, self.input_size)
        out = upsample_maps(maps, target)
        return normalize_maps(out) if normalize else out


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
        methods: Names from :data:`reporter.explain.METHODS`.
        device: Where to compute; default: the model's device if it is not the CPU, else CUDA
            when available, else the CPU. The model is moved there while the engine is open
            and moved back on close.
        record: Extra layers whose activations and gradients are kept in the result (for
            feature attribution), without maps.
        scorecam_batch: Masked images per forward pass for ``scorecam``.
        input_shape: ``(C, H, W)`` of the inputs; with it the layers are resolved (one dry run)
            and hooked on ``__enter__``, otherwise on the first call.
        channels_last: Feed the model channels-last (NHWC) inputs, which oneDNN's CPU
            convolutions run 1.06-1.47x faster. ``None`` (default): on the CPU, when a probe
            forward pass on the first call shows the model gives the same logits that way
            (:mod:`reporter.layout`). While the engine is open (``with``) the model's 4-D
            weights are stored channels-last too, and put back on exit; values never change.
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
            raise ReporterError(f"No CAM method given; choose from: {', '.join(M.METHODS)}.")
        unknown = [m for m in self.methods if m not in M.METHODS]
        if unknown:
            raise ReporterError(
                f"Unknown CAM method {unknown[0]!r}. Valid methods: {', '.join(M.METHODS)}."
            )
        names = [n for n, _ in model.named_modules() if n]
        for name in self.layer_requests + self.record_requests:
            if name != "auto" and name not in names:
                raise ReporterError(unknown_layer_message(model, name, names))
        if "cam" in self.methods and not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ReporterError(_cam_error("the model has no nn.Linear layer"))
        if scorecam_batch < 1:
            raise ReporterError(f"scorecam_batch must be at least 1, got {scorecam_batch}.")
        self.scorecam_batch = int(scorecam_batch)
        self.device = _choose_device(model, device)
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape else None
        self.layers: list[str] = []
        self.recorded: list[str] = []
        self.layer_map: dict[str, str] = {}
        self._infos: list[LayerInfo] | None = None
        self._fc: nn.Linear | None = None
        self._cam_checked: set[str] = set()
        self._recorder: _GradRecorder | None = None
        self._nhwc_weights: list[nn.Parameter] = []
        self._math: _MapMath | None = None
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
        current = _model_device(self.model)
        if current is not None and current != self.device:
            self._home = current
            self.model.to(self.device)

    def _restore_model(self) -> None:
        if self._home is not None:
            home, self._home = self._home, None
            self.model.to(home)

    # -- setup -----------------------------------------------------------------------------
    @property
    def _needs_grad(self) -> bool:
        return bool(M.GRADIENT_METHODS.intersection(self.methods)) or bool(self.record_requests)

    def _setup(self, sample: Tensor) -> None:
        """Dry run: resolve ``auto``, in-place outputs and record layers; find the final Linear."""
        if self._infos is not None:
            return
        infos = trace_layers(self.model, sample)
        for name in dict.fromkeys(self.layer_requests + self.record_requests):
            self.layer_map[name] = resolve_layers(self.model, [name], sample, infos=infos)[0][0]
        self.layers = list(dict.fromkeys(self.layer_map[n] for n in self.layer_requests))
        self.recorded = list(dict.fromkeys(self.layer_map[n] for n in self.record_requests))
        if "cam" in self.methods:
            linears = [i for i in infos if i.type == "Linear" and i.calls >= 1]
            if linears:
                last = max(linears, key=lambda i: i.order)
                module = dict(self.model.named_modules())[last.name]
                if isinstance(module, nn.Linear):
                    self._fc = module
        self._infos = infos
        self._math = _MapMath(self.methods, len(self.layers))
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
            acts = {n: _as_grid(raw[n].detach(), input_size).float() for n in hooked}
            grid_grads = {n: _as_grid(g, input_size).float() for n, g in grads.items()}
            del raw, grads
            inputs = [acts[layer] for layer in self.layers]
            assert self._math is not None and self._graphed is not None
            if self._math.grad_methods:
                inputs += [grid_grads[layer] for layer in self.layers]
            if "scorecam" in self.methods:
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
            if "cam" in self.methods:
                inputs.append(self._cam_weight(acts, logits))
            flat = self._graphed(*inputs)
            if flat.device.type != "cpu":
                flat = flat.cpu()
            elif self._graphed.replayed_last:
                flat = flat.clone()  # a recorded graph's output is overwritten by the next call
            maps, flags, logits_cpu, targets_cpu = _split_flat(
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


class _MapMath:
    """The engine's pure tensor math for one batch: every map, in one flat buffer.

    Called with the activations of each layer, then (when needed) their gradients, then the
    Score-CAM target scores ``[B, C]`` of each layer, then the logits and targets, then the
    final linear weight for ``cam``. Returns the maps (layer by layer, methods in order),
    logits and targets concatenated, so the results reach the CPU with one copy. It never
    synchronises with the host, so :class:`~reporter.explain.graphs.GraphedFunction` can
    record it as a CUDA graph.
    """

    def __init__(self, methods: Sequence[str], n_layers: int) -> None:
        self.methods = list(methods)
        self.n_layers = n_layers
        self.grad_methods = [m for m in self.methods if m in M.GRADIENT_METHODS]

    def __call__(self, *tensors: Tensor) -> Tensor:
        n = self.n_layers
        it = iter(tensors)
        acts = [next(it) for _ in range(n)]
        grads = [next(it) for _ in range(n)] if self.grad_methods else [None] * n
        scores = [next(it) for _ in range(n)] if "scorecam" in self.methods else [None] * n
        logits, targets = next(it), next(it)
        rows = next(it)[targets] if "cam" in self.methods else None
        parts: list[Tensor] = []
        for a, g, sc in zip(acts, grads, scores, strict=True):
            computed = M.gradient_maps(a, g, self.grad_methods) if g is not None else {}
            for method in self.methods:
                if method in computed:
                    value = computed[method]
                elif method == "eigencam":
                    value = M.eigencam(a, M.EIGEN_TOL if a.device.type == "cpu" else None)
                elif method == "cam":
                    assert rows is not None
                    value = M.cam(a, rows)
                else:
                    assert method == "scorecam" and sc is not None
                    value = M.scorecam(a, sc)
                parts.append(value.reshape(-1))
        parts += [logits.float().reshape(-1), targets.to(logits.device).float().reshape(-1)]
        return torch.cat(parts)


def _cam_error(reason: str) -> str:
    return (
        f"Method 'cam' needs a network that ends in global average pooling of the chosen layer "
        f"and one linear layer, but {reason}. Use 'gradcam' instead (it equals CAM up to a "
        "constant factor on such networks and works on any architecture)."
    )


def _flags_of(stacked: Tensor) -> Tensor:
    """``[M, B, n]`` maps -> ``[M, B]`` bool: all zero, or holding NaN/inf."""
    return (~torch.isfinite(stacked)).any(dim=2) | (stacked == 0).all(dim=2)


def _split_flat(
    flat: Tensor,
    methods: list[str],
    layers: list[str],
    shapes: list[tuple[int, ...]],
    logits_shape: tuple[int, ...],
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]], Tensor, Tensor]:
    """Cut :class:`_MapMath`'s flat CPU buffer into maps, flags, logits and targets.

    All methods of a layer share a shape, so the flags take a few vectorised operations per
    layer instead of several per map.
    """
    maps: dict[str, dict[str, Tensor]] = {m: {} for m in methods}
    flags: dict[str, dict[str, Tensor]] = {m: {} for m in methods}
    pos = 0
    for layer, shape in zip(layers, shapes, strict=True):
        size = int(torch.Size(shape).numel())
        block = flat[pos : pos + size * len(methods)].reshape(len(methods), shape[0], -1)
        layer_flags = _flags_of(block)
        for i, m in enumerate(methods):
            maps[m][layer] = block[i].reshape(shape)
            flags[m][layer] = layer_flags[i]
        pos += size * len(methods)
    n_logits = int(torch.Size(logits_shape).numel())
    logits = flat[pos : pos + n_logits].reshape(logits_shape)
    targets = flat[pos + n_logits : pos + n_logits + logits_shape[0]].long()
    return maps, flags, logits, targets


def _split_names(names: Sequence[str] | str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        out.extend(part.strip() for part in str(item).split(",") if part.strip())
    return out


def _model_device(model: nn.Module) -> torch.device | None:
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    return devices.pop() if len(devices) == 1 else None


def _choose_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        try:
            chosen = torch.device(device)
        except RuntimeError as exc:
            raise ReporterError(f"Unknown device {device!r}: {exc}") from exc
    else:
        current = _model_device(model)
        if current is not None and current.type != "cpu":
            return current
        chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ReporterError("CUDA was requested but is not available; use --device cpu.")
        if chosen.index is None:
            chosen = torch.device("cuda", torch.cuda.current_device())
    return chosen


def explain_batches(
    model: nn.Module,
    images: Tensor,
    *,
    layers: Sequence[str] | str,
    methods: Sequence[str] | str,
    targets: Tensor | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Tensor]]]:
    """Maps for many images, in batches, upsampled to the input size and normalised to [0, 1].

    Args:
        model: The classifier (restored afterwards, as with :class:`CamEngine`).
        images: ``[N, C, H, W]`` model inputs.
        layers: Layer names or ``"auto"``.
        methods: Method names.
        targets: ``[N]`` classes to explain; ``None`` for the predicted classes.
        batch_size: Images per engine call.
        device: Where to compute (default: as :class:`CamEngine` chooses).

    Returns:
        ``(maps, flags)``: ``maps[method][layer]`` is ``[N, H, W]`` and ``flags[method][layer]``
        ``[N]`` (True for all-zero or NaN maps), keyed by resolved layer names.
    """
    maps: dict[str, dict[str, list[Tensor]]] = {}
    flags: dict[str, dict[str, list[Tensor]]] = {}
    with CamEngine(
        model, layers=layers, methods=methods, device=device, input_shape=tuple(images.shape[1:])
    ) as engine:
        for start in range(0, len(images), batch_size):
            sl = slice(start, start + batch_size)
            batch_targets = None if targets is None else targets[sl].to(engine.device)
            res = engine(images[sl].to(engine.device), batch_targets)
            for m in res.methods:
                for layer in res.layers:
                    maps.setdefault(m, {}).setdefault(layer, []).append(res.upsampled(m, layer))
                    flags.setdefault(m, {}).setdefault(layer, []).append(res.flags[m][layer])
    return (
        {m: {k: torch.cat(v) for k, v in d.items()} for m, d in maps.items()},
        {m: {k: torch.cat(v) for k, v in d.items()} for m, d in flags.items()},
    )
