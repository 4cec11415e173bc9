"""Feature-visualization views from data (top-k, relevance, receptive fields, filters, maps),
PNG grids, and the ``reporter featvis`` command."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from reporter.errors import ReporterError
from reporter.featvis import (
    ClassChannelRelevance,
    TopKActivations,
    activation_maps,
    filter_grid,
    layer_gradients,
    receptive_field,
)
from reporter.featvis.cli import featvis, parse_channels
from reporter.featvis.grids import image_grid, save_activation_grid, save_grid
from reporter.models.gapnet import gapnet


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------------------ top-k
@pytest.mark.parametrize("channels", [[0, 2, 5], None])
def test_topk_matches_brute_force(channels) -> None:
    gen = torch.Generator().manual_seed(0)
    n, c, h, w, k = 50, 6, 5, 4, 4
    acts = torch.randn(n, c, h, w, generator=gen)
    dataset_index = torch.randperm(1000, generator=gen)[:n]  # arbitrary dataset indices
    top = TopKActivations("layer", channels, k=k)
    for start in range(0, n, 7):
        top.update(acts[start : start + 7], dataset_index[start : start + 7])
    assert top.seen == n and top.feature_size == (h, w)
    flat = acts.flatten(2)
    for ch in channels or range(c):
        best, pos = flat[:, ch].max(1)
        values, order = best.topk(k)
        got = top.examples(ch)
        assert [e.index for e in got] == dataset_index[order].tolist()
        torch.testing.assert_close(torch.tensor([e.value for e in got]), values)
        assert [(e.y, e.x) for e in got] == [(int(p) // w, int(p) % w) for p in pos[order]]
    assert set(top.to_dict()["channels"]) == {str(ch) for ch in channels or range(c)}


def test_topk_fewer_images_than_k_and_flat_layers() -> None:
    top = TopKActivations("fc", [1], k=5)
    top.update(torch.tensor([[0.0, 3.0], [0.0, 1.0]]), [10, 11])
    assert [e.index for e in top.examples(1)] == [10, 11]
    with pytest.raises(ReporterError, match="out of range"):
        TopKActivations("fc", [7]).update(torch.zeros(1, 2, 3, 3), [0])


# ------------------------------------------------------------------------------- relevance
def test_class_relevance_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(1)
    n, c, classes = 40, 5, 3
    acts = torch.randn(n, c, 3, 3, generator=gen)
    grads = torch.randn(n, c, 3, 3, generator=gen)
    labels = torch.tensor([0, 1] * 20)  # class 2 has no images
    rel = ClassChannelRelevance(classes, c)
    for start in range(0, n, 9):
        sl = slice(start, start + 9)
        rel.update(acts[sl], grads[sl], labels[sl])
    contrib = (acts * grads).sum((2, 3)).double()
    for cls in range(2):
        expected = contrib[labels == cls].mean(0)
        torch.testing.assert_close(rel.mean[cls], expected)
        order = expected.argsort(descending=True)[:3].tolist()
        assert [ch for ch, _ in rel.top(cls, 3)] == order
    assert rel.counts.tolist() == [20, 20, 0]
    assert torch.equal(rel.mean[2], torch.zeros(c, dtype=torch.float64))
    assert set(rel.to_dict()["top"]) == {"0", "1"}
    with pytest.raises(ReporterError, match="out of range"):
        rel.top(5)


def test_relevance_on_gap_head_is_weight_times_mean_activation() -> None:
    torch.manual_seed(0)
    model = gapnet(in_channels=1, num_classes=3)
    images = torch.randn(6, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    acts, grads = layer_gradients(model, "features.relu4", images, labels)
    assert _no_hooks(model)
    rel = ClassChannelRelevance(3, 128)
    rel.update(acts, grads, labels)
    per_image = model.fc.weight.detach()[labels] * acts.mean((2, 3))
    for cls in range(3):
        torch.testing.assert_close(
            rel.mean[cls].float(), per_image[labels == cls].mean(0), rtol=1e-4, atol=1e-6
        )


# ------------------------------------------------------------------------- receptive field
def test_receptive_field_of_stacked_convs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, stride=2)
    )
    rf = receptive_field(model, "2", (32, 32), image_channels=1)
    assert rf.size == (5.0, 5.0) and rf.stride == (2.0, 2.0) and rf.feature_size == (16, 16)
    top, left, bottom, right = rf.box(8, 8)
    assert (bottom - top, right - left) == (5, 5)
    assert top <= 17 <= bottom and left <= 17 <= right  # around the position's centre
    assert rf.box(0, 0)[:2] == (0, 0)  # clipped at the border
    assert rf.box(15, 15)[2:] == (32, 32)
    assert _no_hooks(model)


def test_receptive_field_of_a_model_that_needs_its_input_size() -> None:
    """Probed at the input size when the model refuses the larger probe (same answer here)."""

    class NeedsSize(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if tuple(x.shape[-2:]) != (32, 32):
                raise ValueError("this model takes 32x32 images")
            return x

    torch.manual_seed(0)
    convs = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, stride=2)]
    free = receptive_field(nn.Sequential(*convs), "2", (32, 32), image_channels=1)
    guarded = nn.Sequential(NeedsSize(), *convs)
    rf = receptive_field(guarded, "3", (32, 32), image_channels=1)
    assert rf == free and rf.size == (5.0, 5.0)
    assert _no_hooks(guarded) and all(p.grad is None for p in guarded.parameters())


def test_receptive_field_larger_than_image() -> None:
    torch.manual_seed(0)
    model = gapnet(in_channels=1, num_classes=2)  # four 3x3 convs: at least a 9x9 field
    rf = receptive_field(model, "features.relu4", (6, 6), image_channels=1)
    assert rf.box(3, 3) == (0, 0, 6, 6)


# ------------------------------------------------------------------- filters, maps, grids
def test_filter_grid() -> None:
    conv = nn.Conv2d(3, 8, 3)
    with torch.no_grad():
        conv.weight[0] = 0.0
    grid = filter_grid(conv, cell=6, padding=1)
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1
    # filter 0 (all zeros) is mid-grey; 8 filters in rows of 3 (round(sqrt(8)))
    assert torch.allclose(grid[:, 1:7, 1:7], torch.full((3, 6, 6), 0.5))
    gray = filter_grid(nn.Conv2d(1, 4, 5).weight, cell=5)
    assert gray.shape[0] == 1
    with pytest.raises(ReporterError):
        filter_grid(torch.zeros(3, 3))


def test_activation_maps_match_forward() -> None:
    torch.manual_seed(0)
    model = gapnet(in_channels=1, num_classes=2).train()
    image = torch.randn(1, 8, 8)
    maps = activation_maps(model, image, ["features.conv1", "features.relu2"])
    assert model.training and _no_hooks(model)
    upto = list(model.features._modules).index("relu2") + 1
    model.eval()
    with torch.no_grad():
        expected = model.features[:upto](image[None])[0]
    model.train()
    torch.testing.assert_close(maps["features.relu2"], expected)
    assert maps["features.conv1"].shape == (16, 8, 8)
    with pytest.raises(ReporterError, match="Unknown layer"):
        activation_maps(model, image, ["features.conv9"])


def test_grids_write_pngs(tmp_path: Path) -> None:
    path = save_grid(torch.rand(5, 3, 10, 10), tmp_path / "g.png", nrow=5, padding=2, min_cell=20)
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (5 * 22 + 2, 24)
    crops = [torch.rand(1, 4, 6), torch.rand(1, 8, 8)]
    assert image_grid(crops, min_cell=8).shape[0] == 1
    path = save_activation_grid(torch.rand(6, 4, 4), tmp_path / "maps.png")
    with Image.open(path) as img:
        assert img.mode == "RGB"


# ------------------------------------------------------------------------------------- CLI
def test_parse_channels() -> None:
    assert parse_channels("0-3") == [0, 1, 2, 3]
    assert parse_channels("5, 1,2-3,1") == [5, 1, 2, 3]
    for bad in ("a", "3-1", "1-", ""):
        with pytest.raises(ValueError):
            parse_channels(bad)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reporter.models import ModelMeta, save_checkpoint

    torch.manual_seed(0)
    model = gapnet(in_channels=1, num_classes=10)
    meta = ModelMeta(
        arch="gapnet",
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        input_size=(32, 32),
        channels=1,
        mean=[0.5],
        std=[0.5],
    )
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "gapnet.pt", model, meta)


def _run(args: list[str]):
    return CliRunner().invoke(featvis, args, catch_exceptions=False)


def test_cli_channels(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "fv"
    args = [str(checkpoint), "--layer", "features.conv1", "--channels", "0-3"]
    result = _run([*args, "--steps", "3", "--size", "16", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    index = json.loads((out / "featvis.json").read_text())
    assert [c["channel"] for c in index["channels"]] == [0, 1, 2, 3]
    assert index["settings"]["steps"] == 3 and index["layer_channels"] == 16
    for entry in index["channels"]:
        assert (out / entry["image"]).is_file()
    assert (out / index["grid"]).is_file() and (out / index["filters"]).is_file()


def test_cli_top_for_class_with_data(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "fv"
    args = [str(checkpoint), "--layer", "features.relu4", "--top-for-class", "all"]
    args += ["--per-class", "2", "--top-k", "3", "--data", "digits", "--steps", "2"]
    result = _run([*args, "--size", "16", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    index = json.loads((out / "featvis.json").read_text())
    assert [row["class"] for row in index["classes"]] == list(range(10))
    for row in index["classes"]:
        assert len(row["channels"]) == 2 and (out / row["image"]).is_file()
    entry = index["channels"][0]
    assert len(entry["top_examples"]) == 3 and (out / entry["top_image"]).is_file()
    values = [e["value"] for e in entry["top_examples"]]
    assert values == sorted(values, reverse=True)
    assert index["data"]["test_images"] > 0
    assert (out / index["activation_maps"]["image"]).is_file()
    convs = [m for m in gapnet(1, 10).modules() if isinstance(m, nn.Conv2d)]
    field = 1 + sum((m.kernel_size[0] - 1) * m.dilation[0] for m in convs)  # stride-1 stack
    assert index["receptive_field"]["size"] == [float(field)] * 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "features.conv9"], "Unknown layer 'features.conv9'"),
        (["--layer", "features.conv1", "--channels", "20-40"], "out of range"),
        (["--layer", "features.conv1", "--top-for-class", "all"], "pass --data"),
        (["--layer", "fc", "--channels", "1", "--top-for-class", "all"], "not both"),
    ],
)
def test_cli_user_errors(checkpoint: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    result = _run([str(checkpoint), *extra, "--steps", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_bad_channel_syntax(checkpoint: Path, tmp_path: Path) -> None:
    result = _run([str(checkpoint), "--layer", "fc", "--channels", "x-y", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a channel or a range" in result.output


def test_cli_renders_a_bgr_model_in_its_channel_order(tmp_path: Path) -> None:
    """The command gives render the checkpoint's channel order (the data's preprocessing)."""
    from reporter.models import ModelMeta, save_checkpoint

    torch.manual_seed(0)
    meta = ModelMeta(
        arch="gapnet",
        num_classes=3,
        class_names=["a", "b", "c"],
        input_size=(16, 16),
        channels=3,
        mean=[0.4, 0.45, 0.5],
        std=[0.25, 0.25, 0.25],
        channel_order="bgr",
    )
    path = save_checkpoint(tmp_path / "bgr.pt", gapnet(in_channels=3, num_classes=3), meta)
    out = tmp_path / "fv"
    args = [str(path), "--layer", "features.conv1", "--channels", "0-1", "--steps", "2"]
    result = _run([*args, "--size", "8", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "featvis.json").read_text())["settings"]
    assert settings["channel_order"] == "bgr" and settings["size"] == [8, 8]
    assert settings["fixed_size"] is False


def test_cli_renders_at_the_input_size_when_the_model_needs_it(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import importlib

    render_module = importlib.import_module("reporter.featvis.render")  # the module, not render()
    seen: list[tuple] = []

    def refuse(model, layer, size, **kwargs):
        seen.append((layer, size, kwargs["trace_size"]))
        return "ValueError: this model takes 32x32 images"

    monkeypatch.setattr(render_module, "size_error", refuse)
    out = tmp_path / "fv"
    args = [str(checkpoint), "--layer", "features.conv1", "--channels", "0", "--steps", "2"]
    with caplog.at_level(logging.WARNING, logger="reporter.featvis.cli"):
        result = _run([*args, "--size", "16", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert seen == [("features.conv1", (16, 16), (32, 32))]
    settings = json.loads((out / "featvis.json").read_text())["settings"]
    assert settings["size"] == [32, 32] and settings["fixed_size"] is True
    assert (
        "rendering at the model's input size 32x32, every transformed image resized back to "
        "it: the model does not run up to features.conv1 on a 16x16 image (ValueError: this "
        "model takes 32x32 images)."
    ) in caplog.text
