"""The CAM methods: one record per method, the only list of them.

Everything that depends on which methods exist reads :data:`METHODS`: the engine (which
methods need the backward pass, the final linear layer or Score-CAM's masked passes), the map
math (which function computes a map), the configuration's validation and the report's titles
and descriptions. The report imports this module, never the engine; this module imports only
the pure tensor functions its records point to.

Adding a method of an existing kind takes one record here, with its ``compute`` function (pure
tensor math, by convention in :mod:`reporter.explain.methods`). For a gradient method that is
``compute(acts, grads) -> maps [B, h, w]`` after the method's ReLU; the engine then gives it the
shared backward pass, and ``reporter.explain.methods.gradient_maps`` may later fuse it with the
others for speed (it computes the names it knows and the map math calls ``compute`` for the
rest). A new *kind* of input needs the engine and :mod:`reporter.explain.mapmath` too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from reporter.errors import ReporterError
from reporter.explain import methods as M

__all__ = [
    "GRADIENT_METHODS",
    "METHODS",
    "MethodKind",
    "MethodSpec",
    "get_method",
    "method_title",
]

MethodKind = Literal["gradient", "activation", "head", "scores"]
"""What a method's ``compute`` takes besides the activations ``[B, C, h, w]``:

- ``gradient``: the gradients of the target score with respect to them (same shape);
- ``activation``: nothing (class independent);
- ``head``: the final linear layer's row for each image's target class, ``[B, C]``;
- ``scores``: the target score of the input masked by each channel, ``[B, C]`` (Score-CAM).
"""


@dataclass(frozen=True)
class MethodSpec:
    """One CAM method.

    Attributes:
        name: The name users type (``gradcam++``).
        title: The name shown to readers (``Grad-CAM++``).
        kind: What :attr:`compute` takes (see :data:`MethodKind`).
        shows: One plain-language sentence on what the map shows.
        cost: What it costs, in forward and backward passes.
        reference: Author(s) and year of the paper.
        compute: ``compute(acts, extra) -> maps [B, h, w]`` (after the method's ReLU, not
            normalised), ``extra`` as :attr:`kind` says; ``compute(acts)`` for ``activation``.
    """

    name: str
    title: str
    kind: MethodKind
    shows: str
    cost: str
    reference: str
    compute: Callable[..., Tensor]

    @property
    def needs_gradients(self) -> bool:
        """True when the method needs the backward pass."""
        return self.kind == "gradient"

    def info(self) -> dict[str, str]:
        """The texts a report shows: name, title, shows, cost, reference."""
        return {
            "name": self.name,
            "title": self.title,
            "shows": self.shows,
            "cost": self.cost,
            "reference": self.reference,
        }


_SHARED = "shared forward and backward pass"

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="cam",
            title="CAM",
            kind="head",
            shows="The class's final-layer weights applied to the last feature maps; exact for "
            "networks that end in global average pooling and one linear layer.",
            cost="one forward pass",
            reference="Zhou et al., 2016",
            compute=M.cam,
        ),
        MethodSpec(
            name="gradcam",
            title="Grad-CAM",
            kind="gradient",
            shows="Feature maps weighted by their mean gradient for the class: the regions whose "
            "features raise the class score.",
            cost="one forward and one backward pass (shared by all gradient methods)",
            reference="Selvaraju et al., 2017",
            compute=M.gradcam,
        ),
        MethodSpec(
            name="gradcam++",
            title="Grad-CAM++",
            kind="gradient",
            shows="Like Grad-CAM with pixel-wise weights that favour every instance of the "
            "object, not only the strongest one.",
            cost=_SHARED,
            reference="Chattopadhay et al., 2018",
            compute=M.gradcampp,
        ),
        MethodSpec(
            name="xgradcam",
            title="XGrad-CAM",
            kind="gradient",
            shows="Grad-CAM with activation-normalised weights, chosen to satisfy sensitivity "
            "and conservation axioms.",
            cost=_SHARED,
            reference="Fu et al., 2020",
            compute=M.xgradcam,
        ),
        MethodSpec(
            name="layercam",
            title="LayerCAM",
            kind="gradient",
            shows="Element-wise positive gradients times activations: finer maps, usable on "
            "early layers.",
            cost=_SHARED,
            reference="Jiang et al., 2021",
            compute=M.layercam,
        ),
        MethodSpec(
            name="hirescam",
            title="HiResCAM",
            kind="gradient",
            shows="Element-wise gradients times activations without averaging: faithful to "
            "what the layer contributes at each position.",
            cost=_SHARED,
            reference="Draelos and Carin, 2020",
            compute=M.hirescam,
        ),
        MethodSpec(
            name="eigencam",
            title="EigenCAM",
            kind="activation",
            shows="The first principal component of the feature maps: where the dominant "
            "features are, independent of the class.",
            cost="no gradient; a small eigen-problem per image",
            reference="Muhammad and Yeasin, 2020",
            compute=M.eigencam_on_device,
        ),
        MethodSpec(
            name="scorecam",
            title="Score-CAM",
            kind="scores",
            shows="Each feature map used as a mask on the input and weighted by the class "
            "score it keeps: no gradients, slower.",
            cost="one forward pass per channel of the layer",
            reference="Wang et al., 2020",
            compute=M.scorecam,
        ),
    )
}
"""Every method, in the order the docs and reports list them."""

GRADIENT_METHODS: frozenset[str] = frozenset(n for n, s in METHODS.items() if s.needs_gradients)
"""Names of the methods that need the backward pass (derived from :data:`METHODS`)."""


def get_method(name: str) -> MethodSpec:
    """The record of method ``name``.

    Raises:
        ReporterError: for an unknown name, listing the known ones.
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ReporterError(
            f"Unknown CAM method {name!r}. Valid methods: {', '.join(METHODS)}."
        ) from None


def method_title(name: str) -> str:
    """The title readers see for method ``name`` (``Grad-CAM++`` for ``gradcam++``); an unknown
    name (a bundle may name a method this version lacks) is shown as it is."""
    spec = METHODS.get(name)
    return spec.title if spec is not None else name
