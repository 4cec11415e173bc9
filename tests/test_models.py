"""Model building and every checkpoint format, including the refusal of pickled modules."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reporter.errors import ReporterError
from reporter.models import (
    GapNet,
    ModelMeta,
    build_model,
    load_model,
    save_checkpoint,
    weights_sha256,
)
from reporter.models.meta import int_pair


class _Evil:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def _meta(**kw) -> ModelMeta:
    base = dict(
        arch="gapnet",
        num_classes=3,
        class_names=["a", "b", "c"],
        input_size=(16, 16),
        channels=1,
        mean=[0.1],
        std=[0.3],
    )
    base.update(kw)
    return ModelMeta(**base)


def test_gapnet_shapes_and_layers() -> None:
    model = GapNet(in_channels=3, num_classes=7)
    assert model(torch.zeros(2, 3, 24, 20)).shape == (2, 7)
    names = dict(model.named_modules())
    assert {"features.conv1", "features.relu4", "pool", "fc"} <= set(names)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [
        16,
        32,
        64,
        128,
    ]


def test_torchvision_arch_with_grayscale_input() -> None:
    model = build_model("resnet18", num_classes=4, channels=1).eval()
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 4)


def test_first_conv_replacement_keeps_its_geometry() -> None:
    conv = build_model("resnet18", num_classes=4, channels=1).conv1
    assert conv.in_channels == 1
    assert (conv.kernel_size, conv.stride, conv.padding, conv.dilation) == (
        (7, 7),
        (2, 2),
        (3, 3),
        (1, 1),
    )


@pytest.mark.parametrize(
    ("value", "pair"), [((3, 4), (3, 4)), ([5, 6], (5, 6)), ((np.int64(7), 8), (7, 8))]
)
def test_int_pair_converts_pairs(value, pair) -> None:
    got = int_pair(value, "input_size")
    assert got == pair and type(got) is tuple and all(type(v) is int for v in got)


@pytest.mark.parametrize("value", [(3,), (3, 4, 5), (3.0, 4.0), "ab", 7])
def test_int_pair_refuses_anything_else(value) -> None:
    with pytest.raises(ReporterError, match="input_size must be two integers"):
        int_pair(value, "input_size")


def test_unknown_arch_suggests_names() -> None:
    with pytest.raises(ReporterError, match="resnet18"):
        build_model("resnet19", num_classes=2)


def test_reporter_checkpoint_roundtrip(tmp_path: Path) -> None:
    model = GapNet(1, 3).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, _meta())
    loaded = load_model(path)
    assert loaded.kind == "reporter"
    assert loaded.meta.class_names == ["a", "b", "c"]
    assert loaded.meta.input_size == (16, 16)
    assert weights_sha256(loaded.model) == weights_sha256(model)
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(loaded.model(x), model(x))


def test_checkpoint_of_a_channels_last_model_is_stored_contiguous(tmp_path: Path) -> None:
    from reporter.nn.memory_format import use_channels_last

    model = GapNet(1, 3).eval()
    assert use_channels_last(model, (1, 1, 16, 16))
    path = save_checkpoint(tmp_path / "m.pt", model, _meta())
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(t.is_contiguous() for t in state.values())
    assert weights_sha256(load_model(path).model) == weights_sha256(model)


def test_bare_state_dict_needs_arch_and_infers_classes(tmp_path: Path) -> None:
    model = build_model("resnet18", num_classes=5, channels=3).eval()
    path = tmp_path / "sd.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ReporterError, match="--arch"):
        load_model(path)
    loaded = load_model(path, arch="resnet18")
    assert loaded.kind == "state_dict" and loaded.meta.num_classes == 5
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(loaded.model(x), model(x))


def test_state_dict_for_another_arch_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "sd.pth"
    torch.save(GapNet(1, 3).state_dict(), path)
    with pytest.raises(ReporterError) as err:
        load_model(path, arch="resnet18")
    text = str(err.value)
    assert "missing keys" in text and "unexpected keys" in text and "resnet18" in text


def test_state_dict_shape_mismatch_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "sd.pth"
    state = build_model("resnet18", num_classes=3).state_dict()
    state["fc.weight"] = torch.zeros(3, 256)
    torch.save(state, path)
    with pytest.raises(ReporterError, match=r"shape mismatches: fc.weight: checkpoint \(3, 256\)"):
        load_model(path, arch="resnet18")
    torch.save(GapNet(3, 3).state_dict(), path)
    with pytest.raises(ReporterError, match="3 outputs but the data has 4"):
        load_model(path, arch="gapnet", num_classes=4)


def test_torchscript_roundtrip_with_meta(tmp_path: Path) -> None:
    model = GapNet(1, 3).eval()
    with pytest.warns(FutureWarning, match="deprecated"):
        scripted = torch.jit.trace(model, torch.zeros(1, 1, 16, 16))
    path = tmp_path / "m.ts"
    meta_json = json.dumps(_meta(arch="gapnet").to_dict())
    with pytest.warns(FutureWarning, match="deprecated"):
        torch.jit.save(scripted, str(path), _extra_files={"reporter_meta.json": meta_json})
    loaded = load_model(path)
    assert loaded.kind == "torchscript" and not loaded.hookable
    assert loaded.meta.class_names == ["a", "b", "c"]
    x = torch.randn(1, 1, 16, 16)
    assert torch.allclose(loaded.model(x), model(x), atol=1e-5)


def test_pickled_module_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil(marker)}, path)
    with pytest.raises(ReporterError, match="--trust-checkpoint"):
        load_model(path)
    assert not marker.exists()


def test_full_module_loads_only_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(GapNet(1, 3), path)
    with pytest.raises(ReporterError, match="pickled Python object"):
        load_model(path)
    loaded = load_model(path, trust_checkpoint=True)
    assert loaded.kind == "pickle" and loaded.meta.num_classes == 3


@pytest.mark.parametrize("content", [b"", b"hello world", b"PK\x03\x04garbage"])
def test_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(ReporterError, match="not"):
        load_model(path)


def test_missing_file() -> None:
    with pytest.raises(ReporterError, match="not found"):
        load_model("does/not/exist.pt")


@pytest.mark.parametrize("steps", range(1, 13))
def test_lr_schedule_runs_for_any_number_of_steps(steps):
    """OneCycleLR divides by zero when 0.25 * steps == 1 (a 3x10-image folder, batch 64, 4
    epochs); short runs use a constant rate, longer ones peak at the given rate."""
    from reporter.train import MIN_ONECYCLE_STEPS, lr_schedule

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=0.01)
    sched = lr_schedule(opt, 0.01, steps)
    rates = []
    for _ in range(steps):
        opt.step()
        rates.append(opt.param_groups[0]["lr"])
        if sched.last_epoch < steps:
            sched.step()
    if steps < MIN_ONECYCLE_STEPS:
        assert rates == [0.01] * steps
    else:
        assert 0.0095 < max(rates) <= 0.01 + 1e-12 and rates[0] < 0.001
