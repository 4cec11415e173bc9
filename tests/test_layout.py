"""Channels-last layout on the CPU: used only where the model gives the same logits that way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reporter.explain import CamEngine
from reporter.models.build import build_model
from reporter.nn.memory_format import ENV_VAR, channels_last_works, use_channels_last


class ViewNet(nn.Module):
    """Old-style net that flattens a feature map with ``view`` (fails on NHWC tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


class LayoutSensitive(nn.Module):
    """Returns different logits depending on the memory layout of its feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        flat = h.flatten(1) if h.is_contiguous() else h.permute(0, 2, 3, 1).flatten(1)
        return flat[:, :6]


def _is_nhwc(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_owned_model_is_converted_without_changing_values() -> None:
    torch.manual_seed(0)
    model = build_model("gapnet", 4, 3)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    x = torch.randn(3, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    assert use_channels_last(model, (3, 3, 16, 16))
    convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(_is_nhwc(p) for p in convs)
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)


def test_one_channel_model_is_converted_too() -> None:
    model = build_model("gapnet", 3, 1)
    assert use_channels_last(model, (1, 1, 12, 12))
    convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(_is_nhwc(p) for p in convs)  # [C, 1, k, k] is both layouts at once


@pytest.mark.parametrize("cls", [ViewNet, LayoutSensitive])
def test_model_that_depends_on_layout_keeps_the_default(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = cls()
    x = torch.randn(2, 3, 8, 8)
    assert not channels_last_works(model, x)
    assert not use_channels_last(model, tuple(x.shape))
    assert all(p.is_contiguous() for p in model.parameters())
    model(x)  # still runs in the default layout


def test_training_flags_survive_the_probe() -> None:
    model = build_model("gapnet", 3, 3).train()
    use_channels_last(model, (1, 3, 8, 8))
    assert all(m.training for m in model.modules())


def test_turned_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "0")
    model = build_model("gapnet", 3, 3)
    assert not use_channels_last(model, (1, 3, 8, 8))
    assert not channels_last_works(model, torch.zeros(1, 3, 8, 8))
    with CamEngine(model, layers=["auto"], methods=["gradcam"]) as engine:
        engine(torch.randn(2, 3, 8, 8))
    assert engine.channels_last is False


def test_models_without_convolutions_are_left_alone() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    assert not use_channels_last(model, (1, 3, 4, 4))
    assert not channels_last_works(model, torch.zeros(1, 3, 4, 4))


def test_engine_maps_match_in_both_layouts() -> None:
    torch.manual_seed(0)
    model = build_model("gapnet", 4, 3).eval()
    x = torch.randn(5, 3, 16, 16)
    methods = ["cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]
    params = list(model.parameters())
    with CamEngine(model, layers=["auto"], methods=methods) as fast:
        a = fast(x)
        convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
        assert all(_is_nhwc(p) for p in convs)  # stored channels-last while the engine is open
    assert fast.channels_last is True
    assert list(model.parameters()) == params
    with CamEngine(model, layers=["auto"], methods=methods, channels_last=False) as plain:
        b = plain(x)
    assert all(p.is_contiguous() for p in model.parameters())  # the engine never converts
    for m in methods:
        for layer in a.layers:
            torch.testing.assert_close(a.maps[m][layer], b.maps[m][layer], rtol=1e-3, atol=1e-5)


def test_engine_falls_back_for_a_view_model() -> None:
    torch.manual_seed(0)
    model = ViewNet()
    with CamEngine(model, layers=["conv"], methods=["gradcam"]) as engine:
        result = engine(torch.randn(2, 3, 8, 8))
    assert engine.channels_last is False
    assert result.maps["gradcam"]["conv"].shape == (2, 8, 8)


def test_prepare_stores_a_loaded_model_channels_last(digits_checkpoint) -> None:
    from reporter.setup import prepare

    prepared = prepare(model=str(digits_checkpoint), data="digits", device="cpu", progress=False)
    convs = [p for p in prepared.loaded.model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(_is_nhwc(p) for p in convs)


def test_prepare_keeps_the_default_layout_when_turned_off(
    digits_checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reporter.setup import prepare

    monkeypatch.setenv(ENV_VAR, "0")
    prepared = prepare(model=str(digits_checkpoint), data="digits", device="cpu", progress=False)
    assert all(p.is_contiguous() for p in prepared.loaded.model.parameters())
