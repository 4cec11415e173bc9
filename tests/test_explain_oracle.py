"""CamEngine against pytorch-grad-cam, per image, after the same upsampling and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import (
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from reporter.explain import CamEngine
from reporter.explain.methods import first_component_projection
from reporter.models.gapnet import gapnet
from tests.conftest_explain import assert_per_image_corr, calibrate_bn, oracle_maps, pearson

ORACLES = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
}
RESNET_LAYERS = ["layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    calibrate_bn(model, (3, 64, 64))
    return model


@pytest.fixture(scope="module")
def resnet_images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def resnet_result(resnet: torch.nn.Module, resnet_images: torch.Tensor):
    methods = [*ORACLES, "eigencam"]
    with CamEngine(resnet, layers=RESNET_LAYERS, methods=methods, device="cpu") as engine:
        return engine(resnet_images)


@pytest.fixture(scope="module")
def gap() -> torch.nn.Module:
    torch.manual_seed(0)
    return gapnet(in_channels=3, num_classes=10).eval()


@pytest.fixture(scope="module")
def gap_images() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def eigen_oracle(acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's EigenCAM pipeline, with our sign convention applied to its projection."""
    proj = get_2d_projection(acts.numpy())
    summed = acts.sum(dim=1).numpy()
    for i in range(proj.shape[0]):
        centred = summed[i] - summed[i].mean()
        if float((proj[i] * centred).sum()) < 0:
            proj[i] = -proj[i]
    cam = np.maximum(proj, 0)
    scaled = scale_cam_image(cam, (size[1], size[0]))
    return torch.from_numpy(scale_cam_image(scaled))


@pytest.mark.parametrize("method", list(ORACLES))
@pytest.mark.parametrize("layer", RESNET_LAYERS)
def test_resnet18_gradient_methods_match_pytorch_grad_cam(
    resnet, resnet_images, resnet_result, method: str, layer: str
) -> None:
    theirs = oracle_maps(ORACLES[method], resnet, layer, resnet_images, resnet_result.targets)
    ours = resnet_result.upsampled(method, layer)
    assert_per_image_corr(ours, theirs, label=f"{method}/{layer}")


@pytest.mark.parametrize("layer", RESNET_LAYERS)
def test_resnet18_eigencam_matches_svd_projection(resnet_result, layer: str) -> None:
    acts = resnet_result.activations[layer]
    raw_theirs = torch.from_numpy(get_2d_projection(acts.numpy()))
    raw_ours = first_component_projection(acts)
    for i in range(acts.shape[0]):
        # The sign of a principal component is arbitrary; the quantity is the same up to it.
        assert abs(pearson(raw_ours[i], raw_theirs[i])) >= 0.999
        assert torch.allclose(
            raw_ours[i].abs(),
            raw_theirs[i].abs(),
            rtol=1e-3,
            atol=1e-3 * float(raw_theirs[i].abs().max()),
        )
    ours = resnet_result.upsampled("eigencam", layer)
    assert_per_image_corr(ours, eigen_oracle(acts, (64, 64)), label=f"eigencam/{layer}")


def test_resnet18_scorecam_matches_pytorch_grad_cam(resnet) -> None:
    # Score-CAM costs one forward pass per channel and image: keep it small (128 x 2 passes).
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with CamEngine(resnet, layers=["layer2"], methods=["scorecam"], scorecam_batch=48) as engine:
        result = engine(images)
    theirs = oracle_maps(ScoreCAM, resnet, "layer2", images, result.targets)
    assert_per_image_corr(result.upsampled("scorecam", "layer2"), theirs, label="scorecam")


@pytest.mark.parametrize("method", list(ORACLES))
def test_gapnet_gradient_methods_match_pytorch_grad_cam(gap, gap_images, method: str) -> None:
    with CamEngine(gap, layers=["features.relu4", "features.relu2"], methods=[method]) as engine:
        result = engine(gap_images)
    for layer in ("features.relu4", "features.relu2"):
        theirs = oracle_maps(ORACLES[method], gap, layer, gap_images, result.targets)
        assert_per_image_corr(result.upsampled(method, layer), theirs, label=f"{method}/{layer}")


def test_gapnet_eigencam_matches(gap, gap_images) -> None:
    layer = "features.relu4"
    with CamEngine(gap, layers=[layer], methods=["eigencam"]) as engine:
        result = engine(gap_images[:2])  # the oracle's full SVD of [1024, 128] is slow
    acts = result.activations[layer]
    assert_per_image_corr(result.upsampled("eigencam", layer), eigen_oracle(acts, (32, 32)))


def test_gapnet_scorecam_matches(gap, gap_images) -> None:
    layer = "features.relu3"  # 64 channels: 2 x 64 masked passes on each side
    images = gap_images[:2]
    with CamEngine(gap, layers=[layer], methods=["scorecam"], scorecam_batch=40) as engine:
        result = engine(images)
    theirs = oracle_maps(ScoreCAM, gap, layer, images, result.targets)
    assert_per_image_corr(result.upsampled("scorecam", layer), theirs, label="scorecam")


def test_vit_tokens_reshaped_and_match_pytorch_grad_cam() -> None:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=5,
    ).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    layer = "encoder.layers.encoder_layer_0"

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:, :].reshape(tokens.size(0), 4, 4, tokens.size(2)).permute(0, 3, 1, 2)

    with CamEngine(vit, layers=[layer], methods=["gradcam", "layercam", "eigencam"]) as engine:
        result = engine(images)
    assert result.maps["gradcam"][layer].shape == (2, 4, 4)
    assert result.activations[layer].shape == (2, 32, 4, 4)
    for method in ("gradcam", "layercam"):
        theirs = oracle_maps(
            ORACLES[method], vit, layer, images, result.targets, reshape_transform=reshape
        )
        assert_per_image_corr(result.upsampled(method, layer), theirs, label=method)
