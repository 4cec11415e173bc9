"""The audit's feature-visualization render size (``featvis_size``) and channel order: renders
at the input size capped at 128 px unless the model does not run at that size, recorded per
layer in audit.json and said in the report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from reporter.audit.features import AUTO_SIDE, _layer_size, render_size
from reporter.cli import FeatvisSize, cli
from reporter.config import AuditConfig, load_config
from reporter.data.transforms import Preprocess
from reporter.errors import ReporterError


class NeedsSize(nn.Module):
    """Refuses any input but ``side x side`` (a fixed position embedding, an input check)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.side, self.side):
            raise ValueError(f"this model takes {self.side}x{self.side} images")
        return x


def small_net(guard: int | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [NeedsSize(guard)] if guard is not None else []
    layers += [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ]
    return nn.Sequential(*layers)


def test_render_size_caps_the_longer_side_and_keeps_the_aspect_ratio() -> None:
    assert AUTO_SIDE == 128
    assert render_size((224, 224), "auto") == (128, 128)
    assert render_size((32, 32), "auto") == (32, 32)  # small models stay as they are
    assert render_size((128, 128), "auto") == (128, 128)
    assert render_size((224, 320), "auto") == (90, 128)
    assert render_size((300, 150), "auto") == (128, 64)
    assert render_size([224, 224], 224) == (224, 224)
    assert render_size((224, 224), 96) == (96, 96)
    assert render_size((32, 32), 64) == (64, 64)  # asked for: larger than the input
    assert render_size((10, 1000), 100) == (1, 100)


def test_featvis_size_setting_is_checked() -> None:
    assert AuditConfig().featvis_size == "auto"
    assert AuditConfig(featvis_size=96).featvis_size == 96
    for bad, fragment in (
        ("128", 'featvis_size = "128" is a string; expected "auto" or an integer of at least 1'),
        ("big", 'expected "auto" or an integer of at least 1 (without quotes)'),
        (12.5, "featvis_size = 12.5 is a number"),
        (True, "featvis_size = true is a boolean"),
        (0, "featvis_size = 0 is out of range; it must be at least 1"),
    ):
        with pytest.raises(ReporterError) as info:
            AuditConfig(featvis_size=bad)
        assert fragment in str(info.value), (bad, str(info.value))


def test_featvis_size_from_toml_and_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text("featvis_size = 64\n")
    assert load_config(path).featvis_size == 64
    assert load_config(path, {"featvis_size": "auto"}).featvis_size == "auto"
    path.write_text('featvis_size = "64"\n')
    with pytest.raises(ReporterError, match=r"audit.toml: featvis_size = \"64\" is a string"):
        load_config(path)
    assert FeatvisSize().convert("96", None, None) == 96
    assert FeatvisSize().convert(" auto ", None, None) == "auto"
    assert "featvis_size = 96" in AuditConfig(featvis_size=96).to_toml()
    for bad in ("0", "-3", "big", "1.5"):
        result = CliRunner().invoke(cli, ["audit", "--featvis-size", bad])
        assert result.exit_code == 2, bad
        assert "give auto or a number of pixels (at least 1)" in result.output, result.output
        assert "Traceback" not in result.output


def test_layer_size_probes_and_falls_back_to_the_input_size(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model that runs up to the layer at the smaller size gets it; one that does not gets
    its input size, and the reason is logged (a warning when the size was asked for)."""
    auto = AuditConfig()
    assert _layer_size(small_net(), "3", (256, 256), 3, auto) == ((128, 128), None)
    assert _layer_size(small_net(), "3", (32, 32), 3, auto) == ((32, 32), None)
    with caplog.at_level(logging.INFO, logger="reporter.audit.features"):
        size, why = _layer_size(small_net(guard=32), "3", (32, 32), 3, AuditConfig(featvis_size=16))
    assert size == (32, 32)
    assert why == (
        "the model does not run up to 3 on a 16x16 image "
        "(ValueError: this model takes 32x32 images)"
    )
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "Feature visualization of 3 at the input size 32x32, every transformed image resized "
        f"back to it: {why}."
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="reporter.audit.features"):
        size, why = _layer_size(small_net(guard=32), "3", (32, 32), 3, auto)
        assert _layer_size(small_net(guard=256), "3", (256, 256), 3, auto)[0] == (256, 256)
    assert size == (32, 32) and why is not None and "on a 33x33 image" in why
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]


@pytest.mark.parametrize("guard", [None, 32])
def test_audit_renders_at_featvis_size_in_the_models_channel_order(
    guard: int | None, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reporter
    import reporter.audit.features as stage

    calls: list[dict[str, Any]] = []
    real = stage.render

    def spy(*args: Any, **kwargs: Any):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "render", spy)
    pre = Preprocess((32, 32), 3, [0.3, 0.4, 0.5], [0.2, 0.2, 0.2], channel_order="bgr")
    result = reporter.run_audit(
        model=small_net(guard),
        preprocess=pre,
        classes=["cat", "dog", "frog"],
        data=str(image_folder),
        out=str(tmp_path / "out"),
        formats=("json", "html"),
        methods=("gradcam",),
        featvis_channels=2,
        featvis_steps=2,
        featvis_size=16,
        samples_per_class=1,
        trust_samples=0,
        quiet=True,
    )
    [call] = calls
    assert call["channel_order"] == "bgr" and call["mean"] == [0.3, 0.4, 0.5]
    audit = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert audit["config"]["featvis_size"] == 16
    [(layer, info)] = audit["featvis"]["layers"].items()
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    if guard is None:
        assert call["size"] == (16, 16) and call["trace_size"] == (32, 32)
        assert call["fixed_size"] is False
        assert info["size"] == [16, 16] and info["fixed_size_reason"] is None
        assert "2 optimisation steps, rendered at 16×16 px" in html
        assert "Rendered at the model's input size" not in html
    else:
        assert call["size"] == (32, 32) and call["fixed_size"] is True
        assert info["size"] == [32, 32]
        assert info["fixed_size_reason"] == (
            f"the model does not run up to {layer} on a 16x16 image "
            "(ValueError: this model takes 32x32 images)"
        )
        assert "rendered at 32×32 px" in html
        assert (
            "Rendered at the model's input size, every transformed image resized back to it: "
            + info["fixed_size_reason"]
        ) in html
    assert result.audit["featvis"]["layers"][layer]["size"] == info["size"]
