"""reporter.nn: device choice, module lookup, the one layer resolver, the cached layout probe."""

from __future__ import annotations

import ast
import gc
import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import reporter.nn as nn_package
from reporter.errors import ReporterError
from reporter.explain import CamEngine
from reporter.models.build import build_model
from reporter.nn import memory_format
from reporter.nn.device import model_device, model_devices, resolve_device
from reporter.nn.hooks import ActivationRecorder, modules_by_name
from reporter.nn.layers import resolve_layer, trace_layers


def conv_relu() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, padding=1),
            relu=nn.ReLU(inplace=True),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(4, 2),
        )
    )


# -- device --------------------------------------------------------------------------------------
def test_resolve_device_names_and_auto() -> None:
    model = nn.Linear(2, 2)
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None, model=model).type == expected
    assert resolve_device("auto").type == expected
    with pytest.raises(ReporterError, match="Unknown device 'gpu7'"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ReporterError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_model_device_of_empty_and_cpu_models() -> None:
    assert model_device(nn.ReLU()) == torch.device("cpu")
    assert model_devices(nn.ReLU()) == set()
    assert model_devices(nn.Linear(2, 2)) == {torch.device("cpu")}


# -- hooks and names -----------------------------------------------------------------------------
def test_unknown_names_are_reporter_errors_with_close_names() -> None:
    model = conv_relu()
    with pytest.raises(ReporterError, match=r"Unknown layer 'cnv'.*conv"):
        modules_by_name(model, ["cnv"])
    with pytest.raises(ReporterError, match="Unknown layer 'cnv'"):
        ActivationRecorder(model, ["cnv"])
    assert list(modules_by_name(model, ["fc", "conv"])) == ["fc", "conv"]


def _reporter_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reporter")
    }


def test_no_import_cycle_between_hooks_and_layers() -> None:
    root = Path(nn_package.__file__).parent
    assert "reporter.nn.hooks" in _reporter_imports(root / "layers.py")
    assert not any(m.startswith("reporter.nn.") for m in _reporter_imports(root / "hooks.py"))


# -- the one layer resolver ----------------------------------------------------------------------
def test_resolver_follows_inplace_relu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    model = conv_relu()
    infos = trace_layers(model, torch.zeros(1, 3, 6, 6))
    with caplog.at_level(logging.WARNING, logger="reporter.nn.layers"):
        assert resolve_layer(model, "conv", infos).name == "relu"
    assert "overwritten in place by 'relu'" in caplog.text
    assert resolve_layer(model, "fc", infos, need_grid=False).name == "fc"
    with pytest.raises(ReporterError, match="no spatial grid"):
        resolve_layer(model, "fc", infos)
    with pytest.raises(ReporterError, match="Unknown layer"):
        resolve_layer(model, "nope", infos)


# -- the cached channels-last probe --------------------------------------------------------------
@pytest.fixture
def probe_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    real = memory_format._probe

    def spy(model: nn.Module, sample_shape: tuple[int, ...]):
        calls.append(tuple(sample_shape))
        return real(model, sample_shape)

    monkeypatch.setattr(memory_format, "_probe", spy)
    monkeypatch.delenv(memory_format.ENV_VAR, raising=False)
    return calls


def _nhwc(p: torch.Tensor) -> bool:
    return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()


def test_engine_opened_per_batch_probes_once(probe_calls: list[tuple[int, ...]]) -> None:
    torch.manual_seed(0)
    model = build_model("gapnet", 4, 3).eval()
    images = torch.randn(6, 3, 16, 16)
    maps = []
    for start in (0, 2, 4):  # the torchcam way: one `with` per batch
        with CamEngine(model, methods=["gradcam"]) as engine:
            maps.append(engine(images[start : start + 2]).maps["gradcam"])
            assert engine.channels_last is True
            assert all(_nhwc(p) for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1)
        assert all(p.is_contiguous() for p in model.parameters())  # put back on every exit
    assert len(probe_calls) == 1
    assert probe_calls[0][1:] == (3, 16, 16)
    # A smaller last batch has the same per-image shape: no new probe, and no dry run either:
    # re-entering runs the model once per call and nothing else.
    batches: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    try:
        with CamEngine(model, methods=["gradcam"]) as engine:
            engine(images[:1])
    finally:
        handle.remove()
    assert len(probe_calls) == 1
    assert batches == [1]


def test_trace_is_cached_per_model_and_input() -> None:
    model = conv_relu()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    first = trace_layers(model, torch.zeros(1, 3, 6, 6))
    again = trace_layers(model, torch.zeros(4, 3, 6, 6))
    assert len(calls) == 1
    assert [(i.name, i.output_shape, i.overwritten_by) for i in first] == [
        (i.name, i.output_shape, i.overwritten_by) for i in again
    ]
    trace_layers(model, torch.zeros(1, 3, 8, 8))
    assert len(calls) == 2
    model.relu = nn.ReLU()  # a layer replaced: traced again, and no longer in place
    infos = trace_layers(model, torch.zeros(1, 3, 6, 6))
    assert len(calls) == 3
    assert next(i for i in infos if i.name == "conv").overwritten_by is None


def test_probe_runs_on_one_image(monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    model = build_model("gapnet", 4, 3).eval()
    model.register_forward_pre_hook(lambda _m, args: batches.append(int(args[0].shape[0])))
    assert memory_format.try_channels_last(model, (16, 3, 12, 12)) is not None
    assert batches == [1, 1]


def test_probe_cache_keys_and_invalidation(probe_calls: list[tuple[int, ...]]) -> None:
    model = build_model("gapnet", 4, 3).eval()
    assert memory_format.channels_last_works(model, torch.zeros(2, 3, 16, 16))
    assert memory_format.channels_last_works(model, torch.zeros(5, 3, 16, 16))
    assert len(probe_calls) == 1
    memory_format.channels_last_works(model, torch.zeros(1, 3, 20, 20))  # another input shape
    assert len(probe_calls) == 2
    first_conv = next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    old = model.get_submodule(first_conv)
    parent = model.get_submodule(first_conv.rsplit(".", 1)[0]) if "." in first_conv else model
    setattr(
        parent,
        first_conv.rsplit(".", 1)[-1],
        nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, padding=old.padding),
    )
    memory_format.channels_last_works(model, torch.zeros(1, 3, 16, 16))  # a layer replaced
    assert len(probe_calls) == 3
    model.double()  # parameters cast: a new dtype
    memory_format.channels_last_works(model, torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    assert len(probe_calls) == 4


def test_a_failed_probe_is_cached_too(probe_calls: list[tuple[int, ...]]) -> None:
    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x))
            return self.fc(h.view(h.size(0), -1))

    model = ViewNet()
    for _ in range(3):
        with CamEngine(model, layers=["conv"], methods=["gradcam"]) as engine:
            engine(torch.randn(2, 3, 8, 8))
        assert engine.channels_last is False
    assert len(probe_calls) == 1


def test_cache_does_not_keep_models_alive(probe_calls: list[tuple[int, ...]]) -> None:
    model = build_model("gapnet", 4, 3).eval()
    memory_format.channels_last_works(model, torch.zeros(1, 3, 16, 16))
    store = memory_format._VERDICTS._store
    assert model in store
    size = len(store)
    del model
    gc.collect()
    assert len(store) == size - 1
