"""``reporter train`` states its preprocessing (issue 16): the flags of ``reporter audit``, applied
to the training and the test images, stored in the checkpoint and used by a later audit."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from reporter.cli import cli
from reporter.data import load_dataset
from reporter.data.transforms import preprocessing_summary
from reporter.errors import ReporterError
from reporter.models import load_model
from reporter.setup import _train_key, prepare
from reporter.train import TrainConfig, train, training_preprocessing

MEAN = [0.1, 0.2, 0.3]
STD = [0.5, 0.25, 0.125]
STATED = ["--input-size", "24", "--crop", "0.75", "--resize", "stretch", "--channel-order", "bgr"]
STATED += ["--mean", "0.1,0.2,0.3", "--std", "0.5,0.25,0.125"]
SUMMARY = (
    "24x24 BGR, resize stretch, centre crop 0.75, mean [0.1, 0.2, 0.3], std [0.5, 0.25, 0.125]"
)


def _folder(root: Path, per_class: int = 4, side: int = 32) -> Path:
    """Two classes of ``side`` px RGB PNGs: a white border around a centre of one colour per
    class (red-heavy or blue-heavy), with a little noise."""
    rng = np.random.default_rng(0)
    centres = {"reddish": (200, 100, 20), "bluish": (20, 100, 200)}
    for name, rgb in centres.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.full((side, side, 3), 255, dtype=np.uint8)
            q = side // 4
            arr[q:-q, q:-q] = rgb
            arr[q:-q, q:-q] -= rng.integers(0, 10, size=(side - 2 * q, side - 2 * q, 3)).astype(
                np.uint8
            )
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def _by_hand(path: Path) -> torch.Tensor:
    """What the stated preprocessing makes of a 32 px image, without reporter: the centre
    24 x 24 (crop 0.75 of 32 px is 24 px: no resampling), channels as BGR, then (x - mean) / std
    with the BGR mean and std as given."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[:, 4:28, 4:28]
    x = x.flip(0)  # RGB -> BGR
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def test_train_stores_the_stated_preprocessing_and_audit_uses_it(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    out = tmp_path / "m.pt"
    args = ["train", "--data", str(data), "--epochs", "1", "--batch-size", "4", "--quiet"]
    result = CliRunner().invoke(cli, [*args, *STATED, "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"; preprocessing {SUMMARY}). Test accuracy" in result.output

    meta = load_model(out).meta
    assert meta.input_size == (24, 24) and meta.channels == 3
    assert (meta.resize, meta.crop, meta.channel_order, meta.grayscale) == (
        "stretch",
        0.75,
        "bgr",
        False,
    )
    assert meta.mean == MEAN and meta.std == STD

    # the audit's own preprocessing, from the checkpoint alone: the exact tensor
    prep = prepare(model=str(out), data=str(data), device="cpu", progress=False)
    assert prep.loaded.assumed == [] and prep.loaded.notes == []
    dataset = prep.bundle.test
    for i in (0, len(dataset) - 1):
        x, _, _, error = dataset[i]
        assert error is None
        assert torch.allclose(x, _by_hand(dataset.files[i]), rtol=0, atol=1e-6)

    # and the audit command says so without a preprocessing flag
    report = tmp_path / "report"
    light = ["--methods", "gradcam", "--featvis-channels", "0", "--trust-samples", "0"]
    audit = ["audit", "--model", str(out), "--data", str(data), "--formats", "json", "--quiet"]
    result = CliRunner().invoke(cli, [*audit, *light, "--out", str(report)])
    assert result.exit_code == 0, (result.output, result.exception)
    section = json.loads((report / "audit.json").read_text(encoding="utf-8"))["preprocessing"]
    assert section["summary"] == SUMMARY and section["assumed"] == []
    assert f"preprocessing {SUMMARY};" in result.output


def test_training_images_get_the_stated_preprocessing(tmp_path: Path) -> None:
    bundle = load_dataset(str(_folder(tmp_path / "data")), seed=0)
    config = TrainConfig(
        epochs=1,
        batch_size=4,
        input_size=(24, 24),
        crop=0.75,
        channel_order="bgr",
        mean=tuple(MEAN),
        std=tuple(STD),
    )
    result = train(bundle, config, progress=False)
    assert bundle.train is not None
    for i in range(len(bundle.train)):  # what the training loop read
        x, _, _, _ = bundle.train[i]
        assert torch.allclose(x, _by_hand(bundle.train.files[i]), rtol=0, atol=1e-6)
    assert result.loaded.meta.channel_order == "bgr" and result.loaded.meta.crop == 0.75


RED = (204 / 255, 96 / 255, 0.0)
GREY = 0.299 * RED[0] + 0.587 * RED[1] + 0.114 * RED[2]


@pytest.mark.parametrize(
    ("stated", "mean"),
    [
        # the centre the crop keeps (not the white border), in the model's channel order
        ({}, list(RED)),
        ({"channel_order": "bgr"}, list(RED[::-1])),
        ({"grayscale": True}, [GREY] * 3),
    ],
)
def test_unstated_mean_is_measured_as_the_model_sees_the_images(
    tmp_path: Path, stated: dict[str, object], mean: list[float]
) -> None:
    arr = np.full((32, 32, 3), 255, dtype=np.uint8)
    arr[8:24, 8:24] = (204, 96, 0)  # crop 0.5 keeps exactly this centre
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            Image.fromarray(arr).save(tmp_path / folder / f"{i}.png")
    bundle = load_dataset(str(tmp_path), seed=0)
    config = TrainConfig(input_size=(16, 16), crop=0.5, **stated)  # type: ignore[arg-type]
    got = training_preprocessing(bundle, config)
    assert got["mean"] == pytest.approx(mean, abs=1e-4)
    assert got["std"] == pytest.approx([1e-3] * 3)  # one colour: the floor of channel_stats
    assert got["input_size"] == (16, 16) and got["crop"] == 0.5


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--std", "0"], "std = [0.0] must hold positive numbers"),
        (["--mean", "0.1,0.2"], "mean = [0.1, 0.2] has 2 values; give 1 or 3"),
        (["--mean", "a,b"], "--mean"),
        (["--channel-order", "rbg"], "'rbg' is not one of 'rgb', 'bgr'"),
        (["--resize", "squash"], "--resize"),
        (["--crop", "1.5"], "crop = 1.5 is out of range"),
        (["--input-size", "0"], "--input-size"),
        (["--data", "digits", "--mean", "0.1,0.2,0.3"], "the training data is grey (1 channel)"),
    ],
)
def test_bad_preprocessing_is_one_line_not_a_traceback(
    tmp_path: Path, flags: list[str], fragment: str
) -> None:
    data = ["--data", str(tmp_path)] if "--data" not in flags else []
    result = CliRunner().invoke(
        cli, ["train", *data, *flags, "--epochs", "1", "--out", str(tmp_path / "m.pt")]
    )
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.pt").exists()


def test_train_config_checks_what_it_states() -> None:
    with pytest.raises(ReporterError, match=re.escape("std = [0.0] must hold positive numbers")):
        TrainConfig(std=(0.0,))
    with pytest.raises(ReporterError, match="resize must be 'cover' or 'stretch'"):
        TrainConfig(resize="squash")
    assert TrainConfig(mean=[0.5]).mean == (0.5,)  # type: ignore[arg-type]
    assert TrainConfig().stated_preprocessing() == {}


def test_train_and_audit_share_the_preprocessing_options() -> None:
    def options(command: str) -> dict[str, click.Option]:
        params = cli.commands[command].params
        return {p.name: p for p in params if isinstance(p, click.Option) and p.name}

    train_options, audit_options = options("train"), options("audit")
    names = ["input_size", "resize", "crop", "mean", "std", "channel_order", "grayscale"]
    for name in names:
        mine, theirs = train_options[name], audit_options[name]
        assert (mine.opts, mine.secondary_opts, mine.help) == (
            theirs.opts,
            theirs.secondary_opts,
            theirs.help,
        ), name
        assert type(mine.type) is type(theirs.type), name
        assert getattr(mine.type, "choices", None) == getattr(theirs.type, "choices", None)
        assert mine.default is None and theirs.default is None, name
    # the same order in both helps
    order = [p.name for p in cli.commands["train"].params if p.name in names]
    assert order == [p.name for p in cli.commands["audit"].params if p.name in names] == names


def test_an_audit_that_trains_uses_the_stated_preprocessing(tmp_path: Path) -> None:
    """The audit's training path and `reporter train` share the preprocessing: stated keys train
    the model (no longer ignored) and key the cache of trained models."""
    data = str(_folder(tmp_path / "data", per_class=3))
    cache = str(tmp_path / "cache")

    def audit_prepare(**preprocessing: object):
        return prepare(
            model=None,
            data=data,
            epochs=1,
            batch_size=4,
            input_size=24,
            device="cpu",
            cache_dir=cache,
            progress=False,
            preprocessing=preprocessing,
        )

    first = audit_prepare(channel_order="bgr", crop=0.75, mean=MEAN, std=[0.5])
    meta = first.loaded.meta
    assert first.trained is not None
    assert (meta.channel_order, meta.crop, meta.mean, meta.std) == ("bgr", 0.75, MEAN, [0.5] * 3)
    summary = preprocessing_summary(first.preprocess.describe())
    assert summary == "24x24 BGR, resize cover, centre crop 0.75, mean [0.1, 0.2, 0.3], std " + (
        "[0.5, 0.5, 0.5]"
    )
    # the same statement reuses the cached model; none stated is another model
    assert audit_prepare(channel_order="bgr", crop=0.75, mean=MEAN, std=[0.5]).trained is None
    again = audit_prepare()
    assert again.trained is not None and again.loaded.meta.channel_order == "rgb"
    bundle = load_dataset(data, seed=0)
    plain = TrainConfig(input_size=(24, 24))
    assert _train_key(bundle, plain) != _train_key(bundle, replace(plain, channel_order="bgr"))
