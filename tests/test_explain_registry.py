"""The method registry: one record per method, read by the engine and the map math."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from reporter.errors import ReporterError
from reporter.explain import CamEngine, registry
from reporter.explain.registry import (
    GRADIENT_METHODS,
    METHODS,
    MethodSpec,
    get_method,
    method_title,
)
from reporter.models.gapnet import gapnet

ORDER = ["cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam"]


def test_methods_in_documented_order_with_every_text() -> None:
    assert list(METHODS) == ORDER
    for name, spec in METHODS.items():
        assert spec.name == name
        assert spec.title and spec.shows.endswith(".") and spec.cost and spec.reference
        assert callable(spec.compute)
        assert spec.info()["title"] == spec.title


def test_titles_and_gradient_set_come_from_the_records() -> None:
    assert method_title("gradcam++") == "Grad-CAM++"
    assert method_title("scorecam") == "Score-CAM"
    assert {"gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"} == GRADIENT_METHODS
    assert not any(METHODS[m].needs_gradients for m in ("cam", "eigencam", "scorecam"))


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ReporterError, match=r"Unknown CAM method 'gradcam\+'.*gradcam\+\+"):
        get_method("gradcam+")
    with pytest.raises(ReporterError, match="Valid methods: cam, gradcam"):
        CamEngine(gapnet(in_channels=3, num_classes=4), methods=["nope"])


def test_specs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        METHODS["gradcam"].title = "x"  # type: ignore[misc]


def test_registry_imports_no_engine_and_no_report() -> None:
    tree = ast.parse(Path(registry.__file__).read_text())
    imported = {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    reporter_modules = {m for m in imported if m.startswith("reporter")}
    assert reporter_modules == {"reporter.errors", "reporter.explain"}  # `methods as M` only
    assert "reporter.explain.engine" not in imported and not any("report." in m for m in imported)


def test_a_new_gradient_method_needs_only_a_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record with a (acts, grads) function is enough: backward pass and map math follow."""

    def gradient_energy(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * grads).sum(dim=1)

    spec = MethodSpec(
        name="gradenergy",
        title="Gradient energy",
        kind="gradient",
        shows="Squared gradients summed over channels.",
        cost="shared forward and backward pass",
        reference="a test",
        compute=gradient_energy,
    )
    monkeypatch.setitem(METHODS, "gradenergy", spec)
    torch.manual_seed(0)
    model = gapnet(in_channels=3, num_classes=4).eval()
    images = torch.randn(2, 3, 16, 16)
    with CamEngine(model, methods=["gradenergy", "gradcam"]) as engine:
        result = engine(images)
    layer = result.layers[0]
    expected = (result.gradients[layer] ** 2).sum(dim=1)
    torch.testing.assert_close(result.maps["gradenergy"][layer], expected)
    assert result.maps["gradcam"][layer].shape == expected.shape
