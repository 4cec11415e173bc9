# ruff: noqa: E501
"""CAM method registry: one record per method (title, what it shows, cost, reference)."""

from __future__ import annotations

from dataclasses import dataclass

from reporter.errors import ReporterError

__all__ = ["METHODS", "MethodSpec", "get_method", "method_title"]


@dataclass(frozen=True)
class MethodSpec:
    """One CAM method."""

    name: str
    title: str
    needs_gradients: bool
    shows: str
    cost: str
    reference: str


METHODS: dict[str, MethodSpec] = {
    "cam": MethodSpec(
        "cam",
        "CAM",
        False,
        "The class's final-layer weights applied to the last feature maps; exact for networks that end in global average pooling and one linear layer.",
        "one forward pass",
        "Zhou et al., 2016",
    ),
    "gradcam": MethodSpec(
        "gradcam",
        "Grad-CAM",
        True,
        "Feature maps weighted by their mean gradient for the class: the regions whose features raise the class score.",
        "one forward and one backward pass (shared by all gradient methods)",
        "Selvaraju et al., 2017",
    ),
    "gradcam++": MethodSpec(
        "gradcam++",
        "Grad-CAM++",
        True,
        "Like Grad-CAM with pixel-wise weights that favour every instance of the object, not only the strongest one.",
        "shared forward and backward pass",
        "Chattopadhay et al., 2018",
    ),
    "xgradcam": MethodSpec(
        "xgradcam",
        "XGrad-CAM",
        True,
        "Grad-CAM with activation-normalised weights, chosen to satisfy sensitivity and conservation axioms.",
        "shared forward and backward pass",
        "Fu et al., 2020",
    ),
    "layercam": MethodSpec(
        "layercam",
        "LayerCAM",
        True,
        "Element-wise positive gradients times activations: finer maps, usable on early layers.",
        "shared forward and backward pass",
        "Jiang et al., 2021",
    ),
    "hirescam": MethodSpec(
        "hirescam",
        "HiResCAM",
        True,
        "Element-wise gradients times activations without averaging: faithful to what the layer contributes at each position.",
        "shared forward and backward pass",
        "Draelos and Carin, 2020",
    ),
    "eigencam": MethodSpec(
        "eigencam",
        "EigenCAM",
        False,
        "The first principal component of the feature maps: where the dominant features are, independent of the class.",
        "no gradient; a small eigen-problem per image",
        "Muhammad and Yeasin, 2020",
    ),
    "scorecam": MethodSpec(
        "scorecam",
        "Score-CAM",
        False,
        "Each feature map used as a mask on the input and weighted by the class score it keeps: no gradients, slower.",
        "one forward pass per channel of the layer",
        "Wang et al., 2020",
    ),
}


def get_method(name: str) -> MethodSpec:
    """The record of ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(METHODS)
        raise ReporterError(f"Unknown CAM method {name!r}; known: {known}.") from None


def method_title(name: str) -> str:
    """Display title of a method (the name itself for an unknown one)."""
    spec = METHODS.get(name)
    return spec.title if spec else name
