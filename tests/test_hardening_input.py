"""Issue 13, hardening round two, the data / model / metrics side: every case through the CLI.

Names that are not UTF-8, entries that are not regular files, classes without a readable image,
TorchScript models that return tuples or dicts, metadata of the wrong shape, channel counts that
do not fit, featvis on a folder that cannot be written, and NaN/inf in inputs and outputs.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from reporter.cli import cli
from reporter.data.datasets import display_name
from reporter.metrics import classification_metrics
from tests.conftest import make_image_folder
from tests.test_bad_inputs import (
    LEAN,
    assert_ok,
    assert_previous_intact,
    assert_user_error,
    audit,
    make_checkpoint,
    seed_previous,
)


def _audit_json(out: Path) -> dict:
    raw = (out / "audit.json").read_bytes()
    return json.loads(raw.decode("utf-8"))  # strict UTF-8: a lone surrogate cannot be in it


def _skipped(out: Path) -> dict[str, str]:
    return {item["path"]: item["reason"] for item in _audit_json(out)["skipped"]}


# ---------------------------------------------------------------- names that are not UTF-8


def test_display_name_escapes_bytes_that_are_not_utf8() -> None:
    raw = os.fsdecode(b"caf\xe9.png")
    assert display_name(raw) == "caf\\xe9.png"
    assert display_name(b"caf\xe9.png") == "caf\\xe9.png"
    assert display_name("ünïcødé Ωμέγα.png") == "ünïcødé Ωμέγα.png"
    assert display_name("\ud800") == "\\ud800"


@pytest.fixture(scope="module")
def latin1_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes, one of them a folder whose name is Latin-1 bytes; odd files in both."""
    base = tmp_path_factory.mktemp("latin1")
    data = make_image_folder(base / "data", {"plain": 3, "other": 3})
    os.rename(data / "other", os.path.join(os.fsencode(data), b"caf\xe9"))
    latin = os.path.join(os.fsencode(data), b"caf\xe9")
    # a good image and a broken (skipped) one, both with non-UTF-8 names
    Image.new("RGB", (20, 20), (200, 30, 30)).save(os.fsdecode(os.path.join(latin, b"r\xf4t.png")))
    with open(os.path.join(os.fsencode(data / "plain"), b"bad\xff.jpg"), "wb") as f:
        f.write(b"not an image")
    with open(os.path.join(os.fsencode(data / "plain"), b"notes\xff.txt"), "wb") as f:
        f.write(b"text")
    return data


def test_non_utf8_names_are_audited_and_shown_escaped(latin1_folder: Path, tmp_path: Path) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(latin1_folder), "--out", str(out),
                   "--format", "html,json", *LEAN)  # fmt: skip
    assert_ok(result)
    audit_json = _audit_json(out)
    assert "caf\\xe9" in audit_json["dataset"]["classes"]
    assert audit_json["dataset"]["audited_images"] == 7
    skipped = _skipped(out)
    assert skipped[f"{latin1_folder}/plain/bad\\xff.jpg"].startswith("not a readable image")
    assert "not an image file" in skipped[f"{latin1_folder}/plain/notes\\xff.txt"]
    assert "caf\\xe9" in (out / "report.html").read_text(encoding="utf-8")


def test_non_utf8_names_in_predict_json(latin1_folder: Path, tmp_path: Path) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    result = CliRunner().invoke(cli, ["predict", str(model), "--data", str(latin1_folder),
                                      "--json", "-", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads(result.stdout)
    assert any("bad\\xff.jpg" in s["path"] for s in metrics["skipped"])


def test_non_utf8_data_trains(latin1_folder: Path, tmp_path: Path) -> None:
    """The training-data fingerprint (where the run used to crash) hashes the raw names."""
    out = tmp_path / "m.pt"
    args = ["--data", str(latin1_folder), "--epochs", "1", "--input-size", "16", "--quiet"]
    result = CliRunner().invoke(cli, ["train", *args, "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert out.is_file()


# ------------------------------------------------------------ entries that are not regular files


@pytest.fixture
def odd_entries_folder(tmp_path: Path) -> Path:
    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3})
    (data / "a" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(data / "b" / "pipe.jpg")
    (data / "a" / "loop.png").symlink_to(data / "a" / "loop.png")
    os.mkfifo(data / "loose.png")  # beside the class folders
    return data


def test_dangling_symlink_fifo_and_loop_are_listed_not_opened(
    odd_entries_folder: Path, tmp_path: Path
) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(odd_entries_folder), "--out", str(out),
                   "--format", "json", *LEAN)  # fmt: skip
    assert_ok(result)  # and it returned: the FIFO was never opened
    skipped = _skipped(out)
    assert "broken symbolic link" in skipped[str(odd_entries_folder / "a" / "dangling.png")]
    assert "named pipe (FIFO)" in skipped[str(odd_entries_folder / "b" / "pipe.jpg")]
    assert "symbolic link" in skipped[str(odd_entries_folder / "a" / "loop.png")]
    assert "named pipe (FIFO)" in skipped[str(odd_entries_folder / "loose.png")]
    assert _audit_json(out)["dataset"]["audited_images"] == 6


def test_device_file_is_listed() -> None:
    from reporter.data.transforms import ImageReadError, not_a_regular_file, read_image

    assert "device file" in not_a_regular_file(Path("/dev/null"))
    with pytest.raises(ImageReadError, match="device file"):
        read_image("/dev/null")


# ------------------------------------------------------- classes without a readable image


def _folder_with_unreadable_class(root: Path) -> Path:
    data = make_image_folder(root, {"a": 3, "b": 3})
    (data / "c").mkdir()
    for j in range(3):
        (data / "c" / f"{j}.png").write_bytes(b"not a png")
    return data


def test_class_with_only_unreadable_images_is_not_a_zero_in_macro_f1(tmp_path: Path) -> None:
    data = _folder_with_unreadable_class(tmp_path / "data")
    model = make_checkpoint(tmp_path / "m.pt", num_classes=3)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "json", *LEAN)  # fmt: skip
    assert_ok(result)
    metrics = _audit_json(out)["metrics"]
    assert metrics["classes_without_images"] == ["c"]
    f1 = {row["class"]: row["f1"] for row in metrics["per_class"]}
    assert metrics["macro_f1"] == pytest.approx((f1["a"] + f1["b"]) / 2)


def test_macro_f1_leaves_out_classes_without_images() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    m = classification_metrics(probs, np.array([0, 1]), ["a", "b", "c"])
    assert m["macro_f1"] == 1.0 and m["classes_without_images"] == ["c"]


def test_train_refuses_a_class_without_a_readable_image(tmp_path: Path) -> None:
    data = _folder_with_unreadable_class(tmp_path / "data")
    out = tmp_path / "m.pt"
    args = ["--data", str(data), "--epochs", "1", "--input-size", "16", "--quiet"]
    result = CliRunner().invoke(cli, ["train", *args, "--out", str(out)])
    assert_user_error(result, "Class 'c' has no readable training image", "not a readable image")
    assert not out.exists()


# ------------------------------------------------------------------ NaN and inf, in and out


def _nan_everywhere(model: nn.Module) -> None:
    for p in model.parameters():
        p.fill_(float("nan"))


def test_all_nan_model_is_not_reported_well_calibrated(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3})
    model = make_checkpoint(tmp_path / "nan.pt", num_classes=2, edit=_nan_everywhere)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "html,json", *LEAN)  # fmt: skip
    assert "Traceback" not in result.output
    metrics = _audit_json(out)["metrics"]
    assert metrics["nonfinite_outputs"] == metrics["n_images"] == 6
    assert metrics["all_outputs_nonfinite"] is True
    assert metrics["ece"] is None and metrics["mean_confidence"] is None
    assert metrics["calibrated_images"] == 0 and metrics["accuracy"] == 0.0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "well calibrated" not in html
    audit_json = _audit_json(out)
    assert audit_json["verdict"]["level"] == "fail"
    assert audit_json["findings"][0]["statement"].startswith("The model produced no usable output")
    assert audit_json["findings"][0]["severity"] == "high"
    assert "Verdict: fail" in html


def test_calibration_leaves_out_nonfinite_rows() -> None:
    probs = np.array([[0.9, 0.1], [np.nan, np.nan], [0.3, 0.7]])
    m = classification_metrics(probs, np.array([0, 0, 1]), ["a", "b"], nonfinite_inputs=2)
    clean = classification_metrics(probs[[0, 2]], np.array([0, 1]), ["a", "b"])
    assert m["ece"] == pytest.approx(clean["ece"])
    assert m["mean_confidence"] == pytest.approx(0.8)
    assert m["nonfinite_outputs"] == 1 and m["nonfinite_inputs"] == 2
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert sum(b["count"] for b in m["reliability"]) == 2


def test_predictions_mark_nonfinite_rows() -> None:
    from reporter.predict import Predictions

    probs = np.array([[0.9, 0.1], [np.nan, np.nan], [np.inf, 0.0]])
    skipped = [{"path": "x.tif", "reason": "the image has NaN/inf pixel values"}]
    preds = Predictions(probs, np.array([0, 0, 1]), np.arange(3), skipped)
    assert preds.finite.tolist() == [True, False, False]
    assert preds.nonfinite_outputs == 2 and preds.nonfinite_inputs == 1


def test_nan_pixels_in_a_float_tiff_are_skipped_not_blamed_on_the_model(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3})
    arr = np.random.default_rng(0).random((20, 20), dtype=np.float32)
    arr[3, 4] = np.nan
    Image.fromarray(arr, mode="F").save(data / "a" / "nan.tif")
    arr[3, 4] = np.inf
    Image.fromarray(arr, mode="F").save(data / "b" / "inf.tif")
    arr[3, 4] = 0.5
    Image.fromarray(arr, mode="F").save(data / "b" / "fine.tif")
    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "json", *LEAN)  # fmt: skip
    assert_ok(result)
    skipped = _skipped(out)
    assert skipped[str(data / "a" / "nan.tif")] == "the image has NaN/inf pixel values"
    assert skipped[str(data / "b" / "inf.tif")] == "the image has NaN/inf pixel values"
    metrics = _audit_json(out)["metrics"]
    assert metrics["nonfinite_outputs"] == 0 and metrics["n_images"] == 7


# ------------------------------------------------------------------------- TorchScript models


class _TupleOut(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, classes, 3, padding=1)

    def forward(self, x: torch.Tensor):
        y = self.conv(x)
        return y.mean((2, 3)), y


class _DictOut(_TupleOut):
    def forward(self, x: torch.Tensor):
        y = self.conv(x)
        return {"features": y, "logits": y.mean((2, 3))}


class _MapOut(_TupleOut):
    def forward(self, x: torch.Tensor):
        return self.conv(x)


def _script(module: nn.Module, path: Path, channels: int, meta: bytes | None = None) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), torch.zeros(1, channels, 16, 16), strict=False)
        extra = {"reporter_meta.json": meta} if meta is not None else {}
        torch.jit.save(traced, str(path), _extra_files=extra)
    return path


@pytest.mark.parametrize("module", [_TupleOut(), _DictOut()], ids=["tuple", "dict"])
def test_torchscript_returning_a_tuple_or_dict_is_audited(tmp_path: Path, module) -> None:
    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3})
    model = _script(module, tmp_path / "m.pt", 3)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "json", "--input-size", "16", *LEAN)  # fmt: skip
    assert_ok(result)
    metrics = _audit_json(out)["metrics"]
    assert metrics["n_images"] == 6 and metrics["nonfinite_outputs"] == 0


def test_torchscript_returning_maps_is_refused(tmp_path: Path, small_folder: Path) -> None:
    model = _script(_MapOut(), tmp_path / "m.pt", 3)
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(model), "--data", str(small_folder), "--out", str(out),
                   "--input-size", "16", *LEAN)  # fmt: skip
    assert_user_error(result, "returns a tensor of shape (1, 2, 16, 16)", "[batch, classes]")
    assert_previous_intact(out)


def test_one_channel_torchscript_fed_rgb_converts_the_data(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3})  # RGB
    model = _script(_DictOut(channels=1), tmp_path / "grey.pt", 1)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "json", "--input-size", "16", *LEAN)  # fmt: skip
    assert_ok(result)
    assert _audit_json(out)["metrics"]["n_images"] == 6


def test_four_channel_models_fed_rgb_say_both_counts(tmp_path: Path, small_folder: Path) -> None:
    scripted = _script(_TupleOut(channels=4, classes=3), tmp_path / "four.ts.pt", 4)
    checkpoint = make_checkpoint(tmp_path / "four.pt", num_classes=3, channels=4)
    for model in (scripted, checkpoint):
        out = tmp_path / "out"
        seed_previous(out)
        result = audit("--model", str(model), "--data", str(small_folder), "--out", str(out),
                       "--input-size", "16", *LEAN)  # fmt: skip
        assert_user_error(result, "expects 4 input channels", "the data has 3", "1 or 3 channels")
        assert_previous_intact(out)


@pytest.mark.parametrize(
    ("meta", "fragments"),
    [
        (b"{not json", ["reporter_meta.json is not valid JSON"]),
        (b"\xff\xfe", ["reporter_meta.json is not valid JSON"]),
        (b"[1, 2]", ["reporter_meta.json", "is a list, not a table"]),
        (b'{"num_classes": "3"}', ["'num_classes' is '3'", "positive integer"]),
        (b'{"num_classes": 3, "class_names": ["a", "b"]}', ["2 class names", "outputs 3"]),
        (b'{"num_classes": 2, "input_size": [0, 0]}', ["'input_size' is [0, 0]"]),
        (b'{"num_classes": 5, "channels": 3}', ["says the model has 5 classes", "outputs 3"]),
    ],
    ids=["bad-json", "not-utf8", "list", "str-classes", "names", "size0", "count"],
)
def test_torchscript_metadata_errors_name_file_and_field(
    tmp_path: Path, small_folder: Path, meta: bytes, fragments: list[str]
) -> None:
    model = _script(_TupleOut(classes=3), tmp_path / "m.pt", 3, meta=meta)
    result = audit("--model", str(model), "--data", str(small_folder), "--out",
                   str(tmp_path / "out"), *LEAN)  # fmt: skip
    assert_user_error(result, str(model), *fragments)


# -------------------------------------------------------------- reporter checkpoint metadata


def _edited_checkpoint(tmp_path: Path, edit) -> Path:
    path = make_checkpoint(tmp_path / "m.pt", num_classes=3)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def _set(key: str, value):
    def edit(payload: dict) -> None:
        payload["meta"][key] = value

    return edit


def _drop_arch(payload: dict) -> None:
    del payload["meta"]["arch"]


def _meta_is(value):
    def edit(payload: dict) -> None:
        payload["meta"] = value

    return edit


META_CASES = {
    "no-arch": (_drop_arch, ["no 'arch'"]),
    "not-a-dict": (_meta_is(["gapnet", 3]), ["is a list, not a table of fields"]),
    "classes-str": (_set("num_classes", "3"), ["'num_classes' is '3'", "positive integer"]),
    "size-zero": (_set("input_size", [0, 0]), ["'input_size' is [0, 0]"]),
    "size-negative": (_set("input_size", [-4, 16]), ["'input_size' is [-4, 16]"]),
    "names-2-of-3": (_set("class_names", ["a", "b"]), ["has 2 class names", "outputs 3 classes"]),
    "std-zero": (_set("std", [0.0]), ["'std' is [0.0]"]),
    "no-meta": (lambda p: p.pop("meta"), ["without its 'meta'"]),
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_checkpoint_metadata_errors_name_file_and_field(
    tmp_path: Path, small_folder: Path, case: str
) -> None:
    edit, fragments = META_CASES[case]
    model = _edited_checkpoint(tmp_path, edit)
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(model), "--data", str(small_folder), "--out", str(out), *LEAN)
    assert_user_error(result, str(model), *fragments)
    assert_previous_intact(out)


@pytest.mark.parametrize("case", ["no-arch", "not-a-dict", "classes-str"])
def test_layers_on_bad_metadata_is_one_line(tmp_path: Path, case: str) -> None:
    edit, fragments = META_CASES[case]
    model = _edited_checkpoint(tmp_path, edit)
    assert_user_error(CliRunner().invoke(cli, ["layers", str(model)]), str(model), *fragments)


def test_trust_checkpoint_on_random_bytes_is_one_line(tmp_path: Path, small_folder: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    for trust in ([], ["--trust-checkpoint"]):
        result = CliRunner().invoke(cli, ["layers", str(model), *trust])
        message = assert_user_error(result, str(model), "not a readable PyTorch checkpoint")
        assert "--trust-checkpoint" not in message  # the flag would not help: not suggested
        result = audit("--model", str(model), "--data", str(small_folder), "--out",
                       str(tmp_path / "out"), *trust, *LEAN)  # fmt: skip
        assert_user_error(result, "not a readable PyTorch checkpoint")


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("small") / "data", {"a": 2, "b": 2, "c": 2})


# ---------------------------------------------------------- featvis --out that cannot be written


def _featvis(model: Path, out: Path):
    args = [str(model), "--layer", "features.conv1", "--channels", "0-1", "--steps", "2"]
    return CliRunner().invoke(cli, ["featvis", *args, "--size", "16", "--quiet", "--out", str(out)])


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.EROFS, "the file system is read-only"), (errno.EACCES, "permission denied")],
    ids=["erofs", "eacces"],
)
def test_featvis_out_not_writable_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    """Tests run as root, where chmod does not stop a write: the file system answers instead."""
    import reporter.featvis.cli as featvis_cli

    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    out = tmp_path / "locked"

    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(featvis_cli.tempfile, "mkstemp", refuse)
    assert_user_error(_featvis(model, out), f"Cannot write to {out} ({words})", "--out")


def test_featvis_disk_full_while_writing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reporter.featvis.cli as featvis_cli

    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    out = tmp_path / "fv"

    def full(_images, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(featvis_cli, "save_grid", full)
    assert_user_error(_featvis(model, out), "no space left", "--out")


def test_featvis_out_below_a_file_is_one_line(tmp_path: Path) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_user_error(_featvis(model, blocker / "fv"), "Cannot write to", "--out")
    assert_user_error(_featvis(model, blocker), "is a file")


def test_featvis_seed_out_of_range_is_one_line(tmp_path: Path) -> None:
    from reporter.featvis.cli import featvis

    result = CliRunner().invoke(featvis, ["model.pt", "--layer", "x", "--seed", str(2**63)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--seed" in result.output and "0<=x<=9223372036854775807" in result.output
