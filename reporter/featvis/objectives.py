"""Objectives for activation maximization: what to make large, as composable objects.

An :class:`Objective` maps the recorded activations of one forward pass to one value per batch
element (a ``[B]`` tensor). Objectives compose like numbers::

    channel("layer3", 5) - 0.5 * channel("layer3", 7)
    parse_objective("layer3:5 - 0.5*layer3:7")

Kinds (Olah et al. 2017, "Feature Visualization"):

- ``channel``: the mean of one feature map (``"layer:channel"`` or ``"channel:layer:channel"``).
- ``neuron``: the centre position of one feature map (``"neuron:layer:channel"``).
- ``logit``: one class's pre-softmax output (``"logit:class"``).
- ``layer``: the mean squared activation of a whole layer, DeepDream-style (``"layer:name"``).

A leading ``-`` minimizes, ``w*term`` weights a term, and terms add up with ``+`` and ``-``.

Objectives are pure functions of tensors: no hooks, no model. :func:`batched_objective` turns a
list of K objectives into one function giving element ``i`` the value of objective ``i``, so K
units are optimized as one batch of K images.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from reporter.errors import ReporterError

__all__ = [
    "LOGITS",
    "Objective",
    "as_objective",
    "batched_objective",
    "channel",
    "layer",
    "logit",
    "neuron",
    "parse_objective",
]

#: Key under which the model's output (the logits) is passed to objectives.
LOGITS = "<logits>"

Activations = Mapping[str, torch.Tensor]
ObjectiveFn = Callable[[Activations], torch.Tensor]


def _get(acts: Activations, name: str) -> torch.Tensor:
    try:
        return acts[name]
    except KeyError:
        what = "the model output" if name == LOGITS else f"layer {name!r}"
        raise ReporterError(f"No activation recorded for {what}.") from None


def _check_index(tensor: torch.Tensor, index: int, what: str) -> None:
    size = int(tensor.shape[1]) if tensor.dim() >= 2 else 0
    if not 0 <= index < size:
        raise ReporterError(
            f"{what} index {index} is out of range: it has {size} "
            f"({'0' if size else 'no'}{f'-{size - 1}' if size > 1 else ''} valid)."
        )


class Objective:
    """A differentiable value per batch element, computed from recorded activations.

    Args:
        fn: Maps ``{layer name: activation}`` (plus :data:`LOGITS` for the model output) to a
            ``[B]`` tensor.
        layers: Layer names ``fn`` reads (:data:`LOGITS` for the model output).
        name: A readable description, used in logs and the JSON index.
        kind: ``"channel"``, ``"neuron"``, ``"logit"``, ``"layer"`` for elementary objectives,
            ``"sum"`` for compositions.
        target: ``(layer, index)`` for elementary objectives with an index, else ``None``.
        weight: The factor on an elementary objective (``-1`` for a negated one).
    """

    def __init__(
        self,
        fn: ObjectiveFn,
        layers: Sequence[str],
        name: str,
        *,
        kind: str = "sum",
        target: tuple[str, int] | None = None,
        weight: float = 1.0,
    ) -> None:
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name
        self.kind = kind
        self.target = target
        self.weight = weight

    def __call__(self, acts: Activations) -> torch.Tensor:
        """Return the objective's value for every batch element, a ``[B]`` tensor."""
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name!r})"

    def _scaled(self, factor: float, name: str) -> Objective:
        fn = self.fn
        return Objective(
            lambda acts: factor * fn(acts),
            self.layers,
            name,
            kind=self.kind,
            target=self.target,
            weight=self.weight * factor,
        )

    def __neg__(self) -> Objective:
        return self._scaled(-1.0, f"-({self.name})" if self.kind == "sum" else f"-{self.name}")

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            fn, value = self.fn, float(other)
            return Objective(lambda acts: fn(acts) + value, self.layers, f"{self.name} + {value}")
        if not isinstance(other, Objective):
            return NotImplemented
        f, g = self.fn, other.fn
        return Objective(
            lambda acts: f(acts) + g(acts),
            self.layers + other.layers,
            f"{self.name} + {other.name}",
        )

    __radd__ = __add__

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            return self + (-float(other))
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            return self._scaled(float(other), f"{float(other):g}*{self.name}")
        if not isinstance(other, Objective):
            return NotImplemented
        f, g = self.fn, other.fn
        return Objective(
            lambda acts: f(acts) * g(acts),
            self.layers + other.layers,
            f"({self.name}) * ({other.name})",
        )

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> Objective:
        return self * (1.0 / float(other))

    @staticmethod
    def sum(objectives: Sequence[Objective], weights: Sequence[float] | None = None) -> Objective:
        """The (weighted) sum of several objectives."""
        if not objectives:
            raise ReporterError("Cannot sum an empty list of objectives.")
        weights = list(weights) if weights is not None else [1.0] * len(objectives)
        if len(weights) != len(objectives):
            raise ReporterError("Give one weight per objective.")
        total = objectives[0] * weights[0] if weights[0] != 1.0 else objectives[0]
        for obj, w in zip(objectives[1:], weights[1:], strict=True):
            total = total + (obj * w if w != 1.0 else obj)
        return total


def _spatial_mean(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).mean(1) if t.dim() > 1 else t


def channel(layer_name: str, index: int) -> Objective:
    """Mean activation of channel ``index`` of ``layer_name`` (all positions)."""

    def fn(acts: Activations) -> torch.Tensor:
        a = _get(acts, layer_name)
        _check_index(a, index, f"Channel of layer {layer_name!r}:")
        return _spatial_mean(a[:, index]) if a.dim() > 2 else a[:, index]

    return Objective(
        fn, [layer_name], f"{layer_name}:{index}", kind="channel", target=(layer_name, index)
    )


def neuron(layer_name: str, index: int, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of channel ``index`` of ``layer_name`` at one position (the centre by default)."""

    def fn(acts: Activations) -> torch.Tensor:
        a = _get(acts, layer_name)
        _check_index(a, index, f"Channel of layer {layer_name!r}:")
        if a.dim() != 4:
            return a[:, index].reshape(a.shape[0], -1).mean(1)
        h, w = a.shape[-2:]
        return a[:, index, h // 2 if y is None else y, w // 2 if x is None else x]

    where = "" if y is None and x is None else f"@{y},{x}"
    return Objective(
        fn,
        [layer_name],
        f"neuron:{layer_name}:{index}{where}",
        kind="neuron",
        target=(layer_name, index),
    )


def logit(index: int) -> Objective:
    """The model's output (pre-softmax) for class ``index``."""

    def fn(acts: Activations) -> torch.Tensor:
        out = _get(acts, LOGITS)
        _check_index(out, index, "Class (logit)")
        return out.reshape(out.shape[0], out.shape[1], -1)[:, index].mean(1)

    return Objective(fn, [LOGITS], f"logit:{index}", kind="logit", target=(LOGITS, index))


def layer(layer_name: str) -> Objective:
    """Mean squared activation of a whole layer (DeepDream)."""

    def fn(acts: Activations) -> torch.Tensor:
        return _get(acts, layer_name).pow(2).flatten(1).mean(1)

    return Objective(fn, [layer_name], f"layer:{layer_name}", kind="layer")


# ---------------------------------------------------------------------------------------------
# parsing
_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TERM = re.compile(
    rf"\s*(?P<sign>[+-])?\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<atom>[^\s+*-]+)\s*"
)
_KINDS = ("channel", "neuron", "logit", "layer")
_SYNTAX = (
    "Use 'LAYER:CHANNEL', 'channel:LAYER:CHANNEL', 'neuron:LAYER:CHANNEL', 'logit:CLASS' or "
    "'layer:LAYER', optionally weighted and combined, e.g. 'layer3:5 - 0.5*layer3:7'."
)


def _int(text: str, spec: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ReporterError(
            f"Bad objective {spec!r}: {what} must be a whole number, got {text!r}. {_SYNTAX}"
        ) from None
    if value < 0:
        raise ReporterError(f"Bad objective {spec!r}: {what} must be >= 0, got {value}.")
    return value


def _parse_atom(atom: str, spec: str) -> Objective:
    parts = atom.split(":")
    if any(not p for p in parts) or len(parts) > 3:
        raise ReporterError(f"Bad objective term {atom!r} in {spec!r}. {_SYNTAX}")
    kind = parts[0] if parts[0] in _KINDS else None
    if kind is None:
        if len(parts) != 2:
            raise ReporterError(
                f"Bad objective term {atom!r} in {spec!r}: unknown kind {parts[0]!r} "
                f"(kinds: {', '.join(_KINDS)}). {_SYNTAX}"
            )
        return channel(parts[0], _int(parts[1], spec, "the channel"))
    args = parts[1:]
    if kind == "logit":
        if len(args) != 1:
            raise ReporterError(f"Bad objective term {atom!r}: write 'logit:CLASS'.")
        return logit(_int(args[0], spec, "the class"))
    if kind == "layer":
        if len(args) == 1:
            return layer(args[0])
        raise ReporterError(f"Bad objective term {atom!r}: write 'layer:LAYER_NAME'.")
    if len(args) == 1 and kind == "channel":
        # "channel:3" where a module is named "channel" is ambiguous: ask for the full form
        raise ReporterError(f"Bad objective term {atom!r}: write 'channel:LAYER:CHANNEL'.")
    if len(args) != 2:
        raise ReporterError(f"Bad objective term {atom!r}: write '{kind}:LAYER:CHANNEL'.")
    index = _int(args[1], spec, "the channel")
    return channel(args[0], index) if kind == "channel" else neuron(args[0], index)


def parse_objective(spec: str) -> Objective:
    """Parse an objective expression such as ``"layer3:5"`` or ``"-2*logit:3 + layer:layer4"``.

    Raises:
        ReporterError: with the accepted syntax, for anything it cannot read.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ReporterError(f"Empty objective. {_SYNTAX}")
    pos = 0
    terms: list[Objective] = []
    while pos < len(spec):
        match = _TERM.match(spec, pos)
        if not match or match.end() == pos:
            raise ReporterError(
                f"Cannot read objective {spec!r} at position {pos} ({spec[pos:]!r}). {_SYNTAX}"
            )
        if terms and not match.group("sign"):
            raise ReporterError(
                f"Cannot read objective {spec!r}: terms must be joined by '+' or '-'. {_SYNTAX}"
            )
        obj = _parse_atom(match.group("atom"), spec)
        factor = float(match.group("weight")) if match.group("weight") else 1.0
        if match.group("sign") == "-":
            factor = -factor
        terms.append(obj if factor == 1.0 else -obj if factor == -1.0 else obj * factor)
        pos = match.end()
    return Objective.sum(terms) if len(terms) > 1 else terms[0]


def as_objective(obj: Objective | str) -> Objective:
    """Return ``obj`` itself, or parse it when it is a string."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, str):
        return parse_objective(obj)
    raise ReporterError(f"Expected an objective or a string such as 'layer3:5', got {obj!r}.")


@dataclass(frozen=True)
class _Gather:
    layer: str
    indices: tuple[int, ...]
    weights: tuple[float, ...]
    neuron: bool


def _gather_plan(objectives: Sequence[Objective]) -> _Gather | None:
    kinds = {o.kind for o in objectives}
    layers = {o.target[0] for o in objectives if o.target is not None}
    if len(kinds) != 1 or kinds.pop() not in ("channel", "neuron") or len(layers) != 1:
        return None
    return _Gather(
        layer=layers.pop(),
        indices=tuple(o.target[1] for o in objectives),  # type: ignore[index]
        weights=tuple(o.weight for o in objectives),
        neuron=objectives[0].kind == "neuron" and all("@" not in o.name for o in objectives),
    )


def batched_objective(objectives: Sequence[Objective]) -> ObjectiveFn:
    """Combine K objectives into one function whose element ``i`` is objective ``i``'s value.

    When every objective is a plain channel (or centre-neuron) objective on one layer, the values
    come from one gather over the batch; otherwise each objective is evaluated on its own element.

    Returns:
        A function of the activations returning a ``[K]`` tensor.
    """
    objectives = list(objectives)
    plan = _gather_plan(objectives)
    if plan is not None and (plan.neuron or objectives[0].kind == "channel"):
        idx = torch.tensor(plan.indices)
        weights = torch.tensor(plan.weights)

        def gathered(acts: Activations) -> torch.Tensor:
            a = _get(acts, plan.layer)
            for i in set(plan.indices):
                _check_index(a, i, f"Channel of layer {plan.layer!r}:")
            rows = torch.arange(a.shape[0], device=a.device)
            picked = a[rows, idx.to(a.device)]
            if picked.dim() == 3 and plan.neuron:
                h, w = picked.shape[-2:]
                values = picked[:, h // 2, w // 2]
            else:
                values = _spatial_mean(picked)
            return values * weights.to(device=a.device, dtype=values.dtype)

        return gathered

    def each(acts: Activations) -> torch.Tensor:
        values = []
        for i, obj in enumerate(objectives):
            sliced = {k: v[i : i + 1] for k, v in acts.items()}
            values.append(obj(sliced).reshape(-1)[0])
        return torch.stack(values)

    return each
