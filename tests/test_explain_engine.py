"""CamEngine behaviour: exact maps on hand-set nets, hooks, model state, targets, errors, flags."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from reporter.errors import ReporterError
from reporter.explain import (
    METHODS,
    CamEngine,
    CamResult,
    normalize_maps,
    upsample_maps,
)
from reporter.models.gapnet import gapnet
from tests.conftest_explain import assert_same_snapshot, calibrate_bn, has_hooks, snapshot

X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # [1, 1, 2, 2]


def gap_net(inplace: bool = False) -> nn.Sequential:
    """Conv(1->2, 1x1, weights 1 and 2) -> ReLU -> GAP -> Linear(W=[[1, -1], [0.5, 1]])."""
    conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
    fc = nn.Linear(2, 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1))
        fc.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 1.0]]))
        fc.bias.copy_(torch.tensor([0.3, -0.2]))
    return nn.Sequential(
        OrderedDict(
            conv=conv,
            relu=nn.ReLU(inplace=inplace),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=fc,
        )
    )


def flat_net() -> nn.Sequential:
    """Conv(identity) -> Flatten -> Linear over the 4 positions (V = [1, 2, 3, 4]): no GAP."""
    conv = nn.Conv2d(1, 1, kernel_size=1, bias=False)
    fc = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        fc.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    return nn.Sequential(OrderedDict(conv=conv, flat=nn.Flatten(), fc=fc))


@pytest.fixture(scope="module")
def gap() -> nn.Module:
    torch.manual_seed(0)
    return gapnet(in_channels=3, num_classes=10).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


# -- exact maps on hand-set nets -----------------------------------------------------------------
def test_cam_and_gradcam_exact_on_gap_net() -> None:
    methods = ["cam", "gradcam", "hirescam", "layercam", "xgradcam", "gradcam++"]
    with CamEngine(gap_net(), layers=["relu"], methods=methods) as engine:
        result = engine(X, targets=1)
    assert result.layers == ["relu"]
    x = X[0, 0]
    # class 1: CAM = 0.5 * A0 + 1 * A1 = 2.5 x; Grad-CAM weights = W / (h w) -> 0.625 x
    torch.testing.assert_close(result.maps["cam"]["relu"][0], 2.5 * x)
    torch.testing.assert_close(result.maps["gradcam"]["relu"][0], 0.625 * x)
    # constant gradients: HiResCAM and LayerCAM equal Grad-CAM, XGrad-CAM too (up to its eps)
    torch.testing.assert_close(result.maps["hirescam"]["relu"][0], 0.625 * x)
    torch.testing.assert_close(result.maps["layercam"]["relu"][0], 0.625 * x)
    torch.testing.assert_close(result.maps["xgradcam"]["relu"][0], 0.625 * x)
    # Grad-CAM++ with constant gradients g_k and S_k = sum A_k:
    # alpha = g^2 / (2 g^2 + S_k g^3 + 1e-6) and w_k = 4 * g_k * alpha for g_k > 0
    g = torch.tensor([0.5, 1.0]) / 4
    s = torch.tensor([10.0, 20.0])
    w = 4 * g * g**2 / (2 * g**2 + s * g**3 + 1e-6)
    torch.testing.assert_close(result.maps["gradcam++"]["relu"][0], w[0] * x + w[1] * 2 * x)
    torch.testing.assert_close(result.logits, torch.tensor([[0.3 + 2.5 - 5.0, -0.2 + 1.25 + 5.0]]))
    assert result.targets.tolist() == [1]
    assert not any(f.any() for per in result.flags.values() for f in per.values())


def test_class_with_negative_evidence_is_flagged_not_blank() -> None:
    with CamEngine(gap_net(), layers=["relu"], methods=["cam", "gradcam", "layercam"]) as engine:
        result = engine(X, targets=0)
    # class 0: CAM = A0 - A1 = -x -> ReLU -> all zero; LayerCAM keeps ReLU(G) = [0.25, 0] -> x/4
    assert torch.equal(result.maps["cam"]["relu"], torch.zeros(1, 2, 2))
    assert result.flags["cam"]["relu"].tolist() == [True]
    assert result.flags["gradcam"]["relu"].tolist() == [True]
    assert result.flags["layercam"]["relu"].tolist() == [False]
    torch.testing.assert_close(result.maps["layercam"]["relu"][0], 0.25 * X[0, 0])
    assert torch.equal(result.upsampled("cam", "relu"), torch.zeros(1, 2, 2))


def test_gradcam_and_hirescam_exact_without_gap_and_cam_refused() -> None:
    with CamEngine(flat_net(), layers=["conv"], methods=["gradcam", "hirescam"]) as engine:
        result = engine(X)
    x = X[0, 0]
    torch.testing.assert_close(result.maps["hirescam"]["conv"][0], x * x)  # V * A
    torch.testing.assert_close(result.maps["gradcam"]["conv"][0], 2.5 * x)  # mean(V) * A
    with (
        pytest.raises(ReporterError, match="gradcam"),
        CamEngine(flat_net(), layers=["conv"], methods=["cam"]) as engine,
    ):
        engine(X)


def test_cam_refused_on_resnet_inner_layer_and_without_linear() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    with (
        pytest.raises(ReporterError, match="'gradcam' instead"),
        CamEngine(model, layers=["layer3"], methods=["cam"]) as engine,
    ):
        engine(torch.randn(1, 3, 64, 64))
    assert not has_hooks(model)
    no_linear = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ReporterError, match="gradcam"):
        CamEngine(no_linear, methods=["cam"])


def test_cam_proportional_to_gradcam_on_gapnet(gap, images) -> None:
    with CamEngine(gap, layers=["auto"], methods=["cam", "gradcam"]) as engine:
        result = engine(images)
    assert result.layers == ["features.relu4"]
    cam = result.maps["cam"]["features.relu4"]
    grad = result.maps["gradcam"]["features.relu4"]
    assert cam.abs().max() > 0
    torch.testing.assert_close(cam, grad * 32 * 32, rtol=1e-4, atol=1e-5 * float(cam.max()))


def test_inplace_relu_layer_resolved_to_final_value() -> None:
    with CamEngine(gap_net(inplace=True), layers=["conv"], methods=["gradcam", "cam"]) as engine:
        result = engine(X, targets=1)
    assert result.layers == ["relu"]
    torch.testing.assert_close(result.maps["gradcam"]["relu"][0], 0.625 * X[0, 0])
    torch.testing.assert_close(result.maps["cam"]["relu"][0], 2.5 * X[0, 0])
    # Negative pre-activations: the saved activation is the post-ReLU value.
    neg = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]])
    with CamEngine(gap_net(inplace=True), layers=["conv"], methods=["cam"]) as engine:
        result = engine(neg, targets=1)
    torch.testing.assert_close(result.activations["relu"][0, 0], neg[0, 0].clamp_min(0))


# -- hooks and model state -----------------------------------------------------------------------
class Flaky(nn.Module):
    """Wraps a model and raises on the n-th forward call (the dry run is call 1)."""

    def __init__(self, inner: nn.Module, fail_at: int) -> None:
        super().__init__()
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.inner(x)
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return out


def _prepare(model: nn.Module) -> None:
    model.train()
    model.inner.features.conv1.eval()  # a mixed mode must come back as it was
    model.inner.fc.weight.requires_grad_(False)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fail_at", [2, 3, None])
def test_no_hook_leak_and_model_restored(method: str, fail_at: int | None) -> None:
    torch.manual_seed(0)
    model = Flaky(gapnet(in_channels=1, num_classes=4), fail_at=fail_at or 0)
    _prepare(model)
    before = snapshot(model)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    layers = ["inner.features.relu4"] + ([] if method == "cam" else ["inner.features.relu2"])
    # channels_last=False: the layout probe would add forward calls before the counted ones.
    engine = CamEngine(
        model, layers=layers, methods=[method], scorecam_batch=16, channels_last=False
    )
    if fail_at is None:
        with engine:
            result = engine(x)
            assert has_hooks(model)
        assert isinstance(result, CamResult)
    else:
        # fail_at=2: the main forward; fail_at=3: a Score-CAM masked pass (others: no 3rd call)
        with pytest.raises(RuntimeError, match="boom"), engine:
            engine(x)
            engine(x)
    assert not has_hooks(model)
    assert_same_snapshot(before, model)
    engine.close()
    engine.close()  # safe twice
    assert not has_hooks(model)


def test_error_in_user_code_inside_with_removes_hooks(gap, images) -> None:
    before = snapshot(gap)
    with pytest.raises(ValueError, match="user"), CamEngine(gap, methods=["gradcam"]) as engine:
        engine(images)
        raise ValueError("user")
    assert not has_hooks(gap)
    assert_same_snapshot(before, gap)


def test_call_without_with_leaves_no_hooks(gap, images) -> None:
    engine = CamEngine(gap, layers=["features.relu3"], methods=["gradcam", "eigencam"])
    result = engine(images)
    assert not has_hooks(gap)
    assert result.maps["gradcam"]["features.relu3"].shape == (3, 32, 32)


def test_input_shape_hooks_on_enter(gap, images) -> None:
    with CamEngine(gap, methods=["gradcam"], input_shape=(3, 32, 32)) as engine:
        assert has_hooks(gap)
        assert engine.layers == ["features.relu4"]
        result = engine(images)
    assert not has_hooks(gap)
    assert result.layers == ["features.relu4"]


def test_works_under_no_grad_inference_mode_and_frozen(gap, images) -> None:
    methods = ["gradcam", "gradcam++", "layercam", "eigencam"]
    with CamEngine(gap, layers=["features.relu3"], methods=methods) as engine:
        reference = engine(images)
        with torch.no_grad():
            under_no_grad = engine(images)
        with torch.inference_mode():
            inference_images = images.clone()
            under_inference = engine(inference_images)
    for param in gap.parameters():
        param.requires_grad_(False)
    try:
        with CamEngine(gap, layers=["features.relu3"], methods=methods) as engine:
            frozen = engine(images)
        assert all(not p.requires_grad for p in gap.parameters())
    finally:
        for param in gap.parameters():
            param.requires_grad_(True)
    for other in (under_no_grad, under_inference, frozen):
        for method in methods:
            torch.testing.assert_close(
                other.maps[method]["features.relu3"], reference.maps[method]["features.relu3"]
            )
    assert all(p.grad is None for p in gap.parameters())


def test_gradient_free_methods_skip_backward(gap, images, monkeypatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("autograd.grad must not run")

    monkeypatch.setattr(torch.autograd, "grad", fail)
    with CamEngine(gap, methods=["eigencam", "cam", "scorecam"], scorecam_batch=200) as engine:
        result = engine(images[:1], targets=2)
    assert result.gradients == {}
    assert set(result.maps) == {"eigencam", "cam", "scorecam"}


# -- targets -------------------------------------------------------------------------------------
def test_targets_none_int_list_and_tensor(gap, images) -> None:
    with CamEngine(gap, methods=["gradcam"]) as engine:
        predicted = engine(images)
        assert torch.equal(predicted.targets, predicted.logits.argmax(1))
        assert torch.equal(predicted.predictions, predicted.targets)
        as_int = engine(images, targets=7)
        assert as_int.targets.tolist() == [7, 7, 7]
        per_image = engine(images, targets=torch.tensor([7, 7, 7]))
        as_list = engine(images, targets=[1, 7, 3])
        for bad in (10, -1, [1, 2], torch.tensor([0.5, 1.0, 2.0])):
            with pytest.raises(ReporterError):
                engine(images, targets=bad)
    layer = "features.relu4"
    torch.testing.assert_close(as_int.maps["gradcam"][layer], per_image.maps["gradcam"][layer])
    torch.testing.assert_close(as_list.maps["gradcam"][layer][1], as_int.maps["gradcam"][layer][1])
    assert not torch.allclose(as_list.maps["gradcam"][layer][0], as_int.maps["gradcam"][layer][0])


def test_record_layers_give_activations_and_gradients(gap, images) -> None:
    layer = "features.relu4"
    with CamEngine(gap, layers=[layer], methods=["eigencam"], record=["features.relu2"]) as engine:
        result = engine(images, targets=3)
    assert set(result.activations) == {layer, "features.relu2"}
    assert result.activations["features.relu2"].shape == (3, 32, 32, 32)
    assert result.gradients["features.relu2"].shape == (3, 32, 32, 32)
    # GAP + linear head: d logit_c / d A_k(i, j) = W[c, k] / (h w) everywhere
    expected = (gap.fc.weight[3] / (32 * 32)).detach()
    torch.testing.assert_close(result.gradients[layer][0, :, 5, 7], expected)
    assert not result.activations[layer].requires_grad
    assert set(result.maps) == {"eigencam"}


# -- errors --------------------------------------------------------------------------------------
def test_unknown_layer_lists_close_names(gap) -> None:
    with pytest.raises(ReporterError, match=r"features\.relu4"):
        CamEngine(gap, layers=["features.relu5"], methods=["gradcam"])
    resnet = torchvision.models.resnet18(weights=None)
    with pytest.raises(ReporterError, match=r"Closest valid names: layer4"):
        CamEngine(resnet, layers=["layr4"])
    with pytest.raises(ReporterError, match=r"features\.relu2"):
        CamEngine(gap, layers=["auto"], record=["features.relu22"])


def test_unknown_method_lists_valid_ones(gap) -> None:
    with pytest.raises(ReporterError, match=r"gradcam\+\+, xgradcam"):
        CamEngine(gap, methods=["gradcampp"])
    with pytest.raises(ReporterError, match="Unknown device"):
        CamEngine(gap, device="nonsense")


def test_layer_without_spatial_output_refused(gap, images) -> None:
    with pytest.raises(ReporterError, match="no spatial"), CamEngine(gap, layers=["fc"]) as engine:
        engine(images)
    assert not has_hooks(gap)


def test_bad_images_refused(gap) -> None:
    engine = CamEngine(gap)
    with pytest.raises(ReporterError):
        engine(torch.rand(3, 3))  # type: ignore[arg-type]
    with pytest.raises(ReporterError):
        engine([1, 2])  # type: ignore[arg-type]


# -- flags, normalisation, upsampling ------------------------------------------------------------
def test_nan_maps_flagged_and_normalised_safely(gap) -> None:
    bad = torch.rand(2, 3, 32, 32)
    bad[1, :, 3, 3] = float("nan")
    with CamEngine(gap, methods=["gradcam", "eigencam", "hirescam"]) as engine:
        result = engine(bad, targets=0)
    for method in ("gradcam", "eigencam", "hirescam"):
        assert result.flags[method]["features.relu4"].tolist() == [False, True]
        shown = result.upsampled(method, "features.relu4")
        assert torch.isfinite(shown).all()


def test_normalize_and_upsample_helpers() -> None:
    maps = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
    maps_nan = maps.clone()
    maps_nan[0, 0, 0] = float("nan")
    out = normalize_maps(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))
    assert torch.isfinite(normalize_maps(maps_nan)).all()
    up = upsample_maps(maps, (4, 6))
    assert up.shape == (2, 4, 6)
    assert upsample_maps(maps[0], 8).shape == (8, 8)
    assert torch.equal(upsample_maps(maps, (2, 2)), maps)


def test_non_square_input_keeps_aspect() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4)
    calibrate_bn(model, (3, 64, 96), steps=1)
    with CamEngine(model, layers=["layer4", "layer3"], methods=["gradcam"]) as engine:
        result = engine(torch.randn(2, 3, 64, 96))
    assert result.maps["gradcam"]["layer4"].shape == (2, 2, 3)
    assert result.upsampled("gradcam", "layer4").shape == (2, 64, 96)
    assert result.upsampled("gradcam", "layer3", size=32).shape == (2, 32, 48)
    assert result.upsampled("gradcam", "layer3", size=(10, 20), normalize=False).shape == (
        2,
        10,
        20,
    )
    shown = result.upsampled("gradcam", "layer3")
    assert float(shown.min()) >= 0.0 and float(shown.max()) <= 1.0
    with pytest.raises(ReporterError, match="No map"):
        result.upsampled("eigencam", "layer3")


def test_auto_layer_on_resnet_is_block_output() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    with CamEngine(model, methods=["gradcam"], device="cpu") as engine:
        result = engine(torch.randn(1, 3, 224, 224))
    assert result.layers == ["layer4.1"]  # 7x7 at 224 px (at 64 px auto takes 8x8 layer2.1)
    assert engine.layer_map == {"auto": "layer4.1"}


class FunctionalInplace(nn.Module):
    """Modifies the conv output in place with a functional op no dry run can attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = gap_net().conv
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = gap_net().fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y.add_(1.0)
        return self.fc(self.pool(y).flatten(1))


def test_functional_inplace_after_hooked_layer_falls_back_to_full_graph(caplog) -> None:
    model = FunctionalInplace()
    with CamEngine(model, layers=["conv"], methods=["gradcam", "cam"]) as engine:
        result = engine(X, targets=1)
        again = engine(X, targets=1)
    assert "modified in place" in caplog.text
    a = torch.stack([X[0, 0] + 1, 2 * X[0, 0] + 1])  # the value after add_
    expected = (0.5 * a[0] + 1.0 * a[1]) / 4
    torch.testing.assert_close(result.maps["gradcam"]["conv"][0], expected)
    torch.testing.assert_close(again.maps["gradcam"]["conv"][0], expected)
    torch.testing.assert_close(result.maps["cam"]["conv"][0], expected * 4)
    assert not has_hooks(model)
