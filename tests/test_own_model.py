"""Your own model, your own preprocessing (issue 16).

The central fixture is a torchvision resnet18 that knows 64 px images: random convolutions
plus a linear head fitted by least squares (no training loop) on "checkers" images whose class
is the cell size (2 px or 4 px). At 64 px it separates the two classes; at 224 px both cell
sizes look coarse and its answers collapse to one class. So the input size it is audited at
decides the accuracy, which is what a stated ``--input-size`` must get right.
"""

from __future__ import annotations

import json
import logging
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from click.testing import CliRunner
from PIL import Image
from torch import nn

from reporter.cli import cli
from reporter.config import AuditConfig, load_config
from reporter.data.transforms import Preprocess, preprocessing_summary, size_mismatch_hint
from reporter.errors import ReporterError
from reporter.models import ModelMeta, load_model, save_checkpoint
from reporter.models.checkpoint import match_state_dict

MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]
CLASSES = ["fine", "coarse"]


def checkers(n: int, cell: int, g: torch.Generator, side: int = 64) -> torch.Tensor:
    """``n`` RGB checkerboards ``[n, 3, side, side]`` in [0, 1] with ``cell``-pixel cells."""
    x = torch.arange(side)
    out = []
    for _ in range(n):
        oy, ox = torch.randint(0, cell * 2, (2,), generator=g)
        board = (((x[:, None] + oy) // cell + (x[None, :] + ox) // cell) % 2).float()
        colour = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.5
        out.append(
            (board[None] * colour + 0.1 * torch.rand(3, side, side, generator=g)).clamp(0, 1)
        )
    return torch.stack(out)


def _fit_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Least-squares linear head on the frozen random features (one forward, no loop)."""
    feats: dict[str, torch.Tensor] = {}
    hook = model.avgpool.register_forward_hook(lambda m, i, o: feats.update(f=o.flatten(1)))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        model((images - mean) / std)
    hook.remove()
    f = feats["f"]
    mu, sd = f.mean(0), f.std(0) + 1e-6
    design = torch.cat([(f - mu) / sd, torch.ones(len(f), 1)], 1)
    target = F.one_hot(labels, 2).float() * 2 - 1
    w = torch.linalg.lstsq(design, target, driver="gelsd").solution
    with torch.no_grad():
        model.fc.weight.copy_((w[:-1] / sd[:, None]).T)
        model.fc.bias.copy_(w[-1] - (mu / sd) @ w[:-1])


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``weights`` (a resnet18 state_dict that knows 64 px checkers) and ``data`` (16 test
    images per class, 64 x 64 PNG)."""
    root = tmp_path_factory.mktemp("r18")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2).eval()
    images = torch.cat([checkers(32, 2, g), checkers(32, 4, g)])
    _fit_head(model, images, torch.tensor([0] * 32 + [1] * 32))
    torch.save(model.state_dict(), root / "r18.pth")
    for ci, (name, cell) in enumerate(zip(CLASSES, (2, 4), strict=True)):
        folder = root / "data" / f"{ci}-{name}"
        folder.mkdir(parents=True)
        for j, img in enumerate(checkers(16, cell, g)):
            arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"{j:02d}.png")
    return {"weights": root / "r18.pth", "data": root / "data", "root": root}


def _args(*args: str) -> list[str]:
    return [*args, "--methods", "gradcam", "--featvis-channels", "0", "--trust-samples", "0"]


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_crop_and_resize_policies_are_exact() -> None:
    image = torch.arange(16 * 8, dtype=torch.float32).view(1, 16, 8) / 127.0  # 16 high, 8 wide
    cover = Preprocess((4, 4), 1, [0.0], [1.0])
    # cover: the centre 8 x 8 square, averaged 2 x 2
    expected = F.interpolate(image[None, :, 4:12, :], size=(4, 4), mode="bilinear", antialias=True)
    assert torch.allclose(cover.to_unit(image), expected[0], atol=1e-6)
    stretch = Preprocess((4, 4), 1, [0.0], [1.0], resize="stretch")
    squeezed = F.interpolate(image[None], size=(4, 4), mode="bilinear", antialias=True)
    assert torch.allclose(stretch.to_unit(image), squeezed[0], atol=1e-6)
    half = Preprocess((4, 4), 1, [0.0], [1.0], resize="stretch", crop=0.5)
    # resize to 8 x 8 (4 / 0.5), keep the centre 4 x 4: the centre 8 x 4 of the source
    centre = F.interpolate(image[None, :, 4:12, 2:6], size=(4, 4), mode="bilinear", antialias=True)
    assert torch.allclose(half.to_unit(image), centre[0], atol=1e-6)


def test_bgr_and_grayscale() -> None:
    rgb = torch.zeros(3, 2, 2)
    rgb[0] = 1.0  # pure red
    bgr = Preprocess((2, 2), 3, [0.1, 0.2, 0.3], [1.0, 1.0, 1.0], channel_order="bgr")
    x = bgr(rgb)
    assert torch.allclose(x[:, 0, 0], torch.tensor([-0.1, -0.2, 0.7]))  # blue first
    assert torch.allclose(bgr.denormalize(x), rgb)  # shown as RGB again
    grey = Preprocess((2, 2), 3, [0.0], [1.0], grayscale=True)
    assert torch.allclose(grey.to_unit(rgb), torch.full((3, 2, 2), 0.299))
    assert grey.describe()["grayscale"] is True


def test_summary_and_chance_hint() -> None:
    pre = Preprocess((64, 64), 3, MEAN, STD, crop=0.875).describe()
    pre["assumed"] = ["mean", "std"]
    assert preprocessing_summary(pre) == (
        "64x64 RGB, resize cover, centre crop 0.875, mean [0.5, 0.5, 0.5], std [0.25, 0.25, "
        "0.25] (assumed, not stated: mean, std)"
    )
    # 2 classes, 32 images: chance 50 %, two standard errors 17.7 %: 21 right is chance level
    assert "--input-size 64" in size_mismatch_hint(21, 32, 2, (64, 64), (224, 224))
    assert size_mismatch_hint(23, 32, 2, (64, 64), (224, 224)) is None  # 71.9 % > 67.7 %
    assert size_mismatch_hint(16, 32, 2, (224, 224), (224, 224)) is None  # same size
    # a stated input size (checkpoint, flag): check the rest of the preprocessing instead
    stated = size_mismatch_hint(21, 32, 2, (64, 64), (224, 224), stated=True)
    assert stated is not None and "--input-size 64" not in stated
    assert "as its checkpoint or --input-size states" in stated and "--mean" in stated


def test_meta_stores_preprocessing_and_checks_it(tmp_path: Path) -> None:
    meta = ModelMeta(
        "resnet18", 2, CLASSES, (64, 64), 3, MEAN, STD, crop=0.875, channel_order="bgr"
    )
    model = torchvision.models.resnet18(num_classes=2)
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded = load_model(tmp_path / "m.pt")
    assert (loaded.meta.crop, loaded.meta.channel_order, loaded.meta.input_size) == (
        0.875,
        "bgr",
        (64, 64),
    )
    assert loaded.assumed == []
    # stated values win over the checkpoint's, and a note says so
    stated = load_model(tmp_path / "m.pt", input_size=(96, 96), mean=[0.4])
    assert stated.meta.input_size == (96, 96) and stated.meta.mean == [0.4]
    assert any("replaces the checkpoint's" in n for n in stated.notes)
    for key, value in (("crop", 0), ("resize", "squash"), ("channel_order", "rbg")):
        with pytest.raises(ReporterError, match=key):
            ModelMeta.from_dict({**meta.to_dict(), key: value})


# ----------------------------------------------------------------------------- architectures

CUSTOM = """
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self, num_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def make(num_classes, width=4):
    return Small(num_classes=num_classes, width=width)
"""


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"own_custom_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(CUSTOM, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_custom_class_by_import_path_with_its_mean_and_std(
    tmp_path: Path, custom_module: str
) -> None:
    module = __import__(custom_module)
    model = module.make(num_classes=2, width=6)
    meta = ModelMeta(
        arch=f"{custom_module}:make",
        num_classes=2,
        class_names=CLASSES,
        input_size=(24, 24),
        channels=3,
        mean=[0.2, 0.3, 0.4],
        std=[0.5, 0.6, 0.7],
        arch_kwargs={"width": 6},
    )
    save_checkpoint(tmp_path / "small.pt", model, meta)
    loaded = load_model(tmp_path / "small.pt")
    assert type(loaded.model).__name__ == "Small" and loaded.meta.mean == [0.2, 0.3, 0.4]
    x = torch.rand(2, 3, 24, 24)
    assert torch.equal(loaded.model(x), model.eval()(x))
    # a bare state_dict with --arch package.module:Class and [arch_kwargs] from a config file
    torch.save(model.state_dict(), tmp_path / "small.pth")
    (tmp_path / "audit.toml").write_text(
        f'model = "small.pth"\narch = "{custom_module}:Small"\n[arch_kwargs]\nwidth = 6\n',
        encoding="utf-8",
    )
    config = load_config(tmp_path / "audit.toml")
    assert config.model == str(tmp_path / "small.pth")  # relative to the file, not the cwd
    bare = load_model(config.model, arch=config.arch, arch_kwargs=config.arch_kwargs)
    assert torch.equal(bare.model(x), model(x)) and bare.assumed == ["input_size", "mean", "std"]
    with pytest.raises(ReporterError, match=r"package\.module:Small"):
        load_model(tmp_path / "small.pth", arch="Small")
    with pytest.raises(ReporterError, match=r"\[arch_kwargs\]"):
        load_model(tmp_path / "small.pth", arch=f"{custom_module}:make", arch_kwargs={"wide": 1})


def test_timm_model_by_name() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "r10t.pth"
    torch.save(model.state_dict(), path)
    x = torch.rand(1, 3, 32, 32)
    for arch in ("timm:resnet10t", "resnet10t"):
        loaded = load_model(path, arch=arch, input_size=(32, 32))
        assert torch.allclose(loaded.model(x), model(x), atol=1e-5)
    with pytest.raises(ReporterError, match="timm has no model"):
        load_model(path, arch="timm:resnet10tt")


@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        (lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}, "epoch": 3}, "model."),
        (lambda s: {f"_orig_mod.{k}": v for k, v in s.items()}, "_orig_mod."),
        (lambda s: {f"module._orig_mod.{k}": v for k, v in s.items()}, "module._orig_mod."),
        (
            lambda s: {
                "state_dict": {
                    **{f"net.{k}": v for k, v in s.items()},
                    "criterion.weight": torch.ones(2),
                }
            },
            "net.",
        ),
    ],
    ids=["lightning", "torch.compile", "dataparallel+compile", "lightning-extra-keys"],
)
def test_key_prefixes_are_found_by_matching(tmp_path: Path, wrap, prefix: str) -> None:
    model = torchvision.models.resnet18(num_classes=2).eval()
    torch.save(wrap(model.state_dict()), tmp_path / "w.ckpt")
    loaded = load_model(tmp_path / "w.ckpt", arch="resnet18")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded.model(x), model(x))
    assert any(repr(prefix) in note for note in loaded.notes)


def test_prefix_matching_refuses_what_does_not_fit() -> None:
    model = torchvision.models.resnet18(num_classes=2)
    other = {f"model.{k}": v for k, v in torchvision.models.resnet34().state_dict().items()}
    state, note = match_state_dict(model, other)
    assert note is None and state is other


class _Unimportable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_pickled_model_whose_class_is_gone(tmp_path: Path, custom_module: str) -> None:
    import importlib

    model = __import__(custom_module).Small()
    torch.save(model, tmp_path / "whole.pt")
    sys.modules.pop(custom_module)
    sys.path.remove(str(tmp_path))
    (tmp_path / f"{custom_module}.py").unlink()
    importlib.invalidate_caches()
    with pytest.raises(ReporterError) as info:
        load_model(tmp_path / "whole.pt", trust_checkpoint=True)
    message = str(info.value)
    assert "\n" not in message and f"--arch {custom_module}:Small" in message
    sys.path.insert(0, str(tmp_path))  # for the fixture's clean-up


def test_pickled_model_keeps_its_meta_or_says_what_it_assumed(tmp_path: Path) -> None:
    model = _Unimportable()
    meta = ModelMeta("mine", 2, CLASSES, (20, 20), 3, [0.1, 0.2, 0.3], [0.3, 0.3, 0.3])
    torch.save({"model": model, "meta": meta.to_dict()}, tmp_path / "with-meta.pt")
    loaded = load_model(tmp_path / "with-meta.pt", trust_checkpoint=True)
    assert loaded.meta.mean == [0.1, 0.2, 0.3] and loaded.meta.input_size == (20, 20)
    assert loaded.kind == "pickle" and loaded.assumed == []
    torch.save(model, tmp_path / "bare.pt")
    bare = load_model(tmp_path / "bare.pt", trust_checkpoint=True, mean=[0.5], std=[0.5])
    assert bare.assumed == ["input_size"] and bare.meta.mean == [0.5]


# ----------------------------------------------------------------------------- layer choice


def test_auto_layer_on_a_64px_resnet18_has_a_usable_grid() -> None:
    from reporter.nn.layers import auto_layer_choice, trace_layers

    model = torchvision.models.resnet18(num_classes=2)
    name, why = auto_layer_choice(trace_layers(model, torch.zeros(1, 3, 64, 64)))
    assert name == "layer2.1"  # 8 x 8; layer3 is 4 x 4 and layer4 2 x 2 at 64 px
    assert why.startswith("layer2.1 (8x8 grid)") and "layer4.1 is deeper" in why
    name224, why224 = auto_layer_choice(trace_layers(model, torch.zeros(1, 3, 224, 224)))
    assert name224 == "layer4.1" and "7x7" in why224
    _, why_tiny = auto_layer_choice(trace_layers(model, torch.zeros(1, 3, 12, 12)))
    assert "no layer has a grid of at least 7x7" in why_tiny  # the largest grid instead


# ----------------------------------------------------------------------------- end to end


def test_64px_resnet18_audit_from_the_stated_input_size(r18: dict[str, Path], tmp_path: Path):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli,
        _args(
            "audit",
            "--model",
            str(r18["weights"]),
            "--arch",
            "resnet18",
            "--data",
            str(r18["data"]),
            "--input-size",
            "64",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.25",
            "--formats",
            "json,html",
            "--out",
            str(out),
            "--json",
            "-",
            "-q",
        ),
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accuracy"] == 1.0 and summary["images"] == 32
    audit = json.loads((out / "audit.json").read_text())
    pre = audit["preprocessing"]
    assert pre["input_size"] == [64, 64] and pre["mean"] == MEAN and pre["std"] == STD
    assert pre["assumed"] == [] and pre["summary"] == preprocessing_summary(pre)
    assert "preprocessing 64x64 RGB" in result.stderr
    assert audit["explanations"]["layers"] == ["layer2.1"]
    assert audit["explanations"]["layer_choice"].startswith("layer2.1 (8x8 grid)")
    html = (out / "report.html").read_text()
    assert "<th>Preprocessing</th><td>64x64 RGB, resize cover" in html
    assert "auto</span>: layer2.1 (8x8 grid)" in html
    toml = tomllib.loads((out / "audit.toml").read_text())
    assert toml["weights_sha256"] == audit["model"]["sha256"]
    assert toml["input_size"] == 64 and toml["mean"] == MEAN
    assert not Path(toml["model"]).is_absolute() and toml["model"].endswith("r18.pth")
    # the recorded configuration runs again from anywhere: paths are relative to it
    again = load_config(out / "audit.toml")
    assert Path(again.model).resolve() == r18["weights"].resolve()
    assert Path(again.data).resolve() == r18["data"].resolve()


def test_wrong_input_size_warns_with_the_fix(r18: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(r18["weights"]),
            "--arch",
            "resnet18",
            "--data",
            str(r18["data"]),
            "--mean",
            "0.5",
            "--std",
            "0.25",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy    50.00%" in result.stdout
    assert "at chance level" in result.stderr and "--input-size 64" in result.stderr


def test_in_memory_model_through_the_python_api(r18: dict[str, Path], tmp_path: Path) -> None:
    import reporter

    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    model.train()  # the caller's mode: restored afterwards
    pre = Preprocess((32, 32), 3, [0.4, 0.4, 0.4], [0.3, 0.3, 0.3])
    result = reporter.run_audit(
        model=model,
        preprocess=pre,
        classes=CLASSES,
        data=str(r18["data"]),
        out=str(tmp_path / "nb"),
        formats=("json",),
        methods=("gradcam",),
        featvis_channels=0,
        trust_samples=0,
        quiet=True,
    )
    assert model.training
    # oracle: the same preprocessing applied by hand to the same files
    files = sorted(r18["data"].rglob("*.png"))
    with torch.no_grad():
        model.eval()
        x = torch.stack([pre(Image.open(f).convert("RGB")) for f in files])
        labels = torch.tensor([0 if "fine" in f.parent.name else 1 for f in files])
        expected = (model(x).argmax(1) == labels).float().mean().item()
    assert result.audit["metrics"]["accuracy"] == pytest.approx(expected)
    assert result.audit["model"]["format"] == "module"
    assert result.audit["preprocessing"]["mean"] == [0.4, 0.4, 0.4]
    html = result._repr_html_()
    assert "Preprocessing" in html and "32x32 RGB" in html and "Accuracy" in html
    with pytest.raises(ReporterError, match="run_audit"):
        AuditConfig(model=model)  # type: ignore[arg-type]


def test_torchvision_compose_is_read_as_stated_preprocessing() -> None:
    from torchvision import transforms as T

    from reporter.models.inmemory import to_preprocess

    pre = to_preprocess(
        T.Compose([T.Resize(72), T.CenterCrop(64), T.ToTensor(), T.Normalize(MEAN, STD)])
    )
    assert pre.input_size == (64, 64) and pre.crop == pytest.approx(64 / 72)
    assert pre.describe()["std"] == STD
    with pytest.raises(ReporterError, match="ColorJitter"):
        to_preprocess(T.Compose([T.Resize(64), T.ColorJitter(0.1)]))


# ----------------------------------------------------------------------------- configuration


def test_audit_toml_round_trips_a_carriage_return(tmp_path: Path) -> None:
    config = AuditConfig(model_card={"limitations": 'line one\r\nline "two"\\'}, mean=(0.5,))
    path = tmp_path / "audit.toml"
    path.write_text(config.to_toml(relative_to=tmp_path), encoding="utf-8")
    again = load_config(path)
    assert again.model_card == config.model_card and again.mean == (0.5,)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('mean = "a,b"', "mean"),
        ("mean = [0.5, true]", "mean"),
        ("std = [0.0]", "std"),
        ("crop = 1.5", "crop"),
        ('resize = "squash"', "resize"),
        ('channel_order = "rbg"', "channel_order"),
        ('grayscale = "yes"', "grayscale"),
        ("arch_kwargs = 3", "arch_kwargs"),
    ],
)
def test_preprocessing_keys_are_type_checked(tmp_path: Path, toml: str, fragment: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n", encoding="utf-8")
    with pytest.raises(ReporterError, match=fragment):
        load_config(path)


def test_weights_hash_of_another_model_is_refused(r18: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'model = "{r18["weights"]}"\narch = "resnet18"\ndata = "{r18["data"]}"\n'
        f'weights_sha256 = "{"0" * 64}"\nmax_images = 2\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli, _args("audit", "--config", str(path), "--out", str(tmp_path / "o"))
    )
    assert result.exit_code == 2 and "weights_sha256" in result.output
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- CLI conventions


def test_every_command_has_verbosity_quiet_and_shows_defaults() -> None:
    import click

    for name in cli.commands:
        text = CliRunner().invoke(cli, [name, "--help"]).output
        assert "-v, --verbose" in text and "--no-quiet" in text, name
        assert "[default:" in text, name
    # audit's options are "not given" by default (a config may set them): the help shows the
    # value that then applies
    for param in cli.commands["audit"].params:
        if isinstance(param, click.Option) and param.name not in ("verbose",):
            assert param.show_default not in (None, False), param.name
    audit = " ".join(CliRunner().invoke(cli, ["audit", "--help"]).output.split())
    assert "--formats, --format TEXT" in audit and "[default: (html,pdf,json)]" in audit


def test_vv_raises_only_reporters_loggers() -> None:
    from reporter.cli import _setup_logging

    try:
        _setup_logging(2, quiet=False)
        assert logging.getLogger("reporter.audit").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("matplotlib.font_manager").getEffectiveLevel() == logging.WARNING
    finally:
        _setup_logging(0, quiet=False)
    assert logging.getLogger("reporter").getEffectiveLevel() == logging.WARNING


def test_progress_is_one_line_per_stage_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from reporter.progress import progress_bar

    assert list(progress_bar(range(5), desc="explain", unit="batch")) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reporter: explain: 5 batches in ")
    assert "\r" not in err


def test_no_quiet_undoes_a_configs_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reporter.audit

    seen: list[AuditConfig] = []

    def fake_run(config: AuditConfig, argv: list[str] | None = None) -> None:
        seen.append(config)
        raise ReporterError("stopped before running")

    monkeypatch.setattr(reporter.audit, "run_audit", fake_run)
    path = tmp_path / "c.toml"
    path.write_text("quiet = true\n", encoding="utf-8")
    for flags, quiet in (([], True), (["--no-quiet"], False), (["-q"], True)):
        result = CliRunner().invoke(cli, ["audit", "--config", str(path), *flags])
        assert result.exit_code == 2 and seen[-1].quiet is quiet, flags
