"""The train / predict / layers commands through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from reporter.cli import cli
from reporter.models import build_model


def test_train_writes_checkpoint_and_prints_accuracy(tmp_path: Path, image_folder: Path) -> None:
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(image_folder),
            "--epochs",
            "1",
            "--input-size",
            "16",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Test accuracy" in result.output and out.exists()
    layers = CliRunner().invoke(cli, ["layers", str(out)])
    assert layers.exit_code == 0, layers.output
    assert "features.relu4" in layers.output and "<- auto" in layers.output


def test_predict_json_to_stdout(digits_checkpoint: Path) -> None:
    result = CliRunner().invoke(cli, ["predict", str(digits_checkpoint), "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["n_images"] == 450
    assert len(metrics["per_class"]) == 10 and "top5_accuracy" in metrics
    assert len(metrics["reliability"]) == 15


def test_predict_table_and_json_file(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    result = CliRunner().invoke(
        cli, ["predict", str(digits_checkpoint), "--json", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "precision" in result.output
    assert json.loads(out.read_text())["n_images"] == 450


def test_resnet18_state_dict_through_layers_and_predict(tmp_path: Path, image_folder: Path) -> None:
    model = build_model("resnet18", num_classes=3, channels=3)
    path = tmp_path / "resnet.pth"
    torch.save(model.state_dict(), path)
    layers = CliRunner().invoke(
        cli, ["layers", str(path), "--arch", "resnet18", "--input-size", "32"]
    )
    assert layers.exit_code == 0, layers.output
    assert "layer4.1" in layers.output and "<- auto" in layers.output
    pred = CliRunner().invoke(
        cli,
        [
            "predict",
            str(path),
            "--arch",
            "resnet18",
            "--data",
            str(image_folder),
            "--input-size",
            "32",
            "--json",
            "-",
            "--quiet",
        ],
    )
    assert pred.exit_code == 0, pred.output
    metrics = json.loads(pred.output)
    assert metrics["n_images"] == 24
    assert [c["class"] for c in metrics["per_class"]] == ["cat", "dog", "frog"]


def test_user_errors_exit_2_without_traceback(tmp_path: Path, digits_checkpoint: Path) -> None:
    runner = CliRunner()
    cases = [
        (["predict", str(tmp_path / "nope.pt")], "not found"),
        (["predict", str(digits_checkpoint), "--data", str(tmp_path / "missing")], "not found"),
        (["train", "--arch", "resnet19", "--epochs", "1"], "resnet18"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output


def test_class_count_mismatch(digits_checkpoint: Path, image_folder: Path) -> None:
    result = CliRunner().invoke(
        cli, ["predict", str(digits_checkpoint), "--data", str(image_folder), "--quiet"]
    )
    assert result.exit_code == 2
    assert "10 output classes" in result.output and "has 3" in result.output
