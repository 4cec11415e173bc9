"""One rule for --data / --train-data / --test-data (reporter.data.registry.load_dataset):
--train-data names the training data alone; --test-data is always what is tested; a generated
data set has its own test split; every conflict is one clear message."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reporter.cli import cli
from reporter.data import load_dataset
from reporter.errors import ReporterError
from tests.conftest import make_image_folder


@pytest.fixture()
def folders(tmp_path):
    train = make_image_folder(tmp_path / "train", {"cat": 6, "dog": 6})
    test = make_image_folder(tmp_path / "test", {"cat": 2, "dog": 3}, seed=1)
    return train, test


def test_test_data_beside_default_digits_is_what_is_audited(folders):
    _, test = folders
    bundle = load_dataset("digits", test_path=str(test))
    assert bundle.class_names == ["cat", "dog"] and bundle.train is None
    assert len(bundle.test) == 5


def test_folder_with_test_data_trains_on_folder_tests_on_test_data(folders):
    train, test = folders
    bundle = load_dataset(str(train), test_path=str(test))
    assert bundle.train is not None and len(bundle.train) == 12 and len(bundle.test) == 5


def test_train_data_without_data_uses_the_folders(folders):
    train, test = folders
    for spec in ("", "digits", str(train)):
        bundle = load_dataset(spec, train_path=str(train), test_path=str(test))
        assert bundle.class_names == ["cat", "dog"] and len(bundle.train) == 12


@pytest.mark.parametrize(
    ("spec", "train", "message"),
    [
        ("shapes", False, "--test-data .* cannot be combined with --data shapes"),
        ("shapes-patch", False, "cannot be combined with --data shapes-patch"),
        ("shapes", True, "generated data; it cannot be combined with --train-data"),
        ("OTHER", True, "both name the training data; give one of them"),
    ],
)
def test_conflicts_are_one_clear_message(folders, tmp_path, spec, train, message):
    train_dir, test = folders
    if spec == "OTHER":
        spec = str(make_image_folder(tmp_path / "other", {"a": 2, "b": 2}))
    with pytest.raises(ReporterError, match=message):
        load_dataset(spec, train_path=str(train_dir) if train else None, test_path=str(test))


def test_cli_train_needs_training_data_with_test_data_alone(folders, tmp_path):
    _, test = folders
    result = CliRunner().invoke(
        cli, ["train", "--test-data", str(test), "--out", str(tmp_path / "m.pt"), "--quiet"]
    )
    assert result.exit_code == 2, result.output
    assert "Training needs a training split" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.pt").exists()


def test_cli_train_with_train_and_test_data_never_trains_on_digits(folders, tmp_path):
    train, test = folders
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--train-data",
            str(train),
            "--test-data",
            str(test),
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
    import torch

    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["class_names"] == ["cat", "dog"]
