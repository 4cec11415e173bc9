"""Issue 7, bad and hostile input: every case is made on the fly and fed to the real CLI.

Each test checks one of two outcomes: the run completes and records in ``audit.json`` what it
skipped (``path`` + ``reason``), or it stops with one clear message (no traceback) and a non-zero
exit status (2 for user errors). In both cases a report already in ``--out`` stays byte-identical
until a new one is complete, and no ``.partial-`` folder is left behind.

Interruptions (SIGINT / SIGTERM), repeatability and the output folder are in
``test_bad_inputs_runs.py``.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

import reporter
from reporter.cli import cli
from reporter.data.transforms import read_image
from reporter.models import save_checkpoint
from reporter.models.build import build_model
from reporter.models.meta import ModelMeta
from tests.conftest import folder_snapshot, make_image_folder

# The cheapest audit that still runs every stage that matters here: one method, no feature
# visualization, no trust metrics (those have their own tests), one gallery image per class.
LEAN = [
    "--featvis-channels",
    "0",
    "--samples-per-class",
    "1",
    "--methods",
    "gradcam",
    "--trust-samples",
    "0",
    "--quiet",
]

PREVIOUS = {
    "report.html": b"<html>previous good report</html>\n",
    "audit.json": b'{"previous": true}\n',
    "report.pdf": b"%PDF-1.7 previous\n",
    "audit.toml": b"# previous\n",
}


# ----------------------------------------------------------------------------- helpers


def audit(*args: str) -> Result:
    """``reporter audit ARGS`` through click, exceptions caught (an escaped one fails below)."""
    return CliRunner().invoke(cli, ["audit", *args])


def assert_user_error(result: Result, *fragments: str) -> str:
    """Exit 2, one ``Error:`` message holding ``fragments``, no traceback; return the message."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "Error:" in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
    return result.output


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output


def seed_previous(out: Path) -> None:
    """Put a 'previous good report' into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in PREVIOUS.items():
        (out / name).write_bytes(data)


def assert_previous_intact(out: Path) -> None:
    """The previous report is byte-identical, nothing was added, no temporary folder is left."""
    assert folder_snapshot(out) == PREVIOUS
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


def assert_no_partial(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if ".partial-" in p.name]


def make_checkpoint(
    path: Path,
    *,
    num_classes: int,
    channels: int = 3,
    class_names: list[str] | None = None,
    size: int = 16,
    edit=None,
) -> Path:
    """An untrained gapnet reporter checkpoint (``edit(model)`` may change its weights)."""
    torch.manual_seed(0)
    model = build_model("gapnet", num_classes, channels)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    mean, std = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) if channels == 3 else ([0.5], [0.5])
    meta = ModelMeta(
        arch="gapnet",
        num_classes=num_classes,
        class_names=class_names or [str(i) for i in range(num_classes)],
        input_size=(size, size),
        channels=channels,
        mean=mean,
        std=std,
    )
    return save_checkpoint(path, model, meta)


def noise_image(size: tuple[int, int] = (20, 20), mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def write_bilevel_png(path: Path, width: int, height: int) -> Path:
    """A valid, all-black 1-bit PNG of any size, written as a stream (a few KB on disk).

    Lets the test make a real 20000x20000 image without ever holding it in memory.
    """

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """A 30x20 (landscape as stored) JPEG with EXIF orientation 6 (display rotated 90 CW).

    The stored top-left 10x10 block is red, so the upright image has red at its top right.
    """
    arr = np.zeros((20, 30, 3), dtype=np.uint8)
    arr[:10, :10] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, format="JPEG", exif=exif, quality=95)
    return path


def corrupt_exif_jpeg(path: Path) -> Path:
    """A good JPEG whose EXIF block is cut short (Pillow warns 'Corrupt EXIF data')."""
    jpeg = encoded(noise_image(seed=8), "JPEG")
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 40
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    path.write_bytes(jpeg[:2] + app1 + jpeg[2:])
    return path


# ------------------------------------------------------------------ a folder of bad files

# Class folder names: spaces, unicode and HTML (no "/" possible in a folder name).
SPACES = "class with spaces"
UNICODE = "ünïcødé Ωμέγα"
HTML = '<img src=x onerror="alert(1)">'

# (class folder, file name) -> the reason in audit.json must contain this.
BROKEN = {
    (SPACES, "zero.jpg"): "not a readable image",
    (SPACES, "zero.png"): "not a readable image",
    (UNICODE, "truncated.jpg"): "truncated",
    (UNICODE, "truncated.png"): "truncated",
    (HTML, "text.jpg"): "not a readable image",
    (HTML, "huge_20000.png"): "too large",
    (SPACES, "huge_10000.png"): "too large",
}
# Odd but readable: these must be audited, not skipped.
ODD_BUT_READABLE = [
    (SPACES, "cmyk.jpg"),
    (SPACES, "gray16.png"),
    (UNICODE, "palette.png"),
    (UNICODE, "alpha.png"),
    (HTML, "gray.png"),
    (HTML, "gray_alpha.png"),
    (HTML, "one_pixel.png"),
    (HTML, "bilevel.png"),
    (UNICODE, "exif_rotated.jpg"),
    (UNICODE, "corrupt_exif.jpg"),
    (SPACES, "strip_20000x1.png"),
    (HTML, "tall_1x3000.png"),
]


def build_messy_folder(root: Path) -> Path:
    """Three real classes with good, odd and broken files, plus junk that must be ignored."""
    make_image_folder(root, {SPACES: 3, UNICODE: 3, HTML: 3}, size=20)
    good_jpeg = encoded(noise_image(seed=1), "JPEG", quality=90)
    good_png = encoded(noise_image(seed=2), "PNG")
    contents = {
        "zero.jpg": b"",
        "zero.png": b"",
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "truncated.png": good_png[: len(good_png) // 2],
        "text.jpg": b"this is not a picture, just some text\n",
    }
    for (cls, name), _ in BROKEN.items():
        if name in contents:
            (root / cls / name).write_bytes(contents[name])
    # Pillow's decompression-bomb guard: > 2x MAX_IMAGE_PIXELS is an error at open,
    # > 1x a warning; both must become a skip that says "too large".
    write_bilevel_png(root / HTML / "huge_20000.png", 20000, 20000)
    write_bilevel_png(root / SPACES / "huge_10000.png", 10000, 10000)

    Image.new("CMYK", (20, 20), (0, 200, 200, 0)).save(root / SPACES / "cmyk.jpg")
    gray16 = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 150).astype(np.uint16)
    Image.fromarray(gray16).save(root / SPACES / "gray16.png")
    noise_image(seed=3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
        root / UNICODE / "palette.png"
    )
    rgba = noise_image(seed=4, mode="RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((20, 20)))
    rgba.save(root / UNICODE / "alpha.png")
    noise_image(seed=5, mode="L").save(root / HTML / "gray.png")
    noise_image(seed=6, mode="LA").save(root / HTML / "gray_alpha.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / HTML / "one_pixel.png")
    noise_image(seed=7, mode="1").save(root / HTML / "bilevel.png")
    exif_rotated_jpeg(root / UNICODE / "exif_rotated.jpg")
    corrupt_exif_jpeg(root / UNICODE / "corrupt_exif.jpg")
    Image.new("RGB", (20000, 1), (250, 20, 20)).save(root / SPACES / "strip_20000x1.png")
    Image.new("L", (1, 3000), 200).save(root / HTML / "tall_1x3000.png")

    # Junk that must be ignored silently (not a class, not skipped, not audited).
    (root / "__MACOSX" / SPACES).mkdir(parents=True)
    (root / "__MACOSX" / SPACES / "._img_000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / ".hidden_class").mkdir()
    noise_image().save(root / ".hidden_class" / "img.png")
    (root / SPACES / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / SPACES / "._img_000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / UNICODE / "__MACOSX").mkdir()
    (root / UNICODE / "__MACOSX" / "._x.png").write_bytes(b"junk")
    (root / HTML / ".thumbs").mkdir()
    (root / HTML / ".thumbs" / "t.jpg").write_bytes(b"junk")

    # Recorded but not used: a non-image file and an empty class folder.
    (root / SPACES / "notes.txt").write_text("labelled by Bob\n")
    (root / "empty class").mkdir()
    return root


@pytest.fixture(scope="module")
def messy_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Result]:
    """One audit of the messy folder by a 3-class RGB model (no stored class names)."""
    import weasyprint  # noqa: F401 - it sets LOAD_TRUNCATED_IMAGES on import; must not matter

    base = tmp_path_factory.mktemp("messy")
    data = build_messy_folder(base / "data")
    model = make_checkpoint(base / "rgb3.pt", num_classes=3)
    out = base / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "html,json", *LEAN)  # fmt: skip
    return data, out, result


def _skipped_by_name(out: Path) -> dict[str, str]:
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    out_map = {}
    for item in audit_json["skipped"]:
        assert set(item) >= {"path", "reason"} and item["reason"], item
        out_map[item["path"]] = item["reason"]
    return out_map


def test_messy_folder_completes_without_traceback(messy_audit) -> None:
    _, out, result = messy_audit
    assert_ok(result)
    assert (out / "report.html").is_file() and (out / "audit.json").is_file()
    assert_no_partial(out.parent)


@pytest.mark.parametrize(("cls", "name"), sorted(BROKEN), ids=lambda v: str(v)[:12])
def test_broken_file_is_skipped_with_reason(messy_audit, cls: str, name: str) -> None:
    data, out, _ = messy_audit
    skipped = _skipped_by_name(out)
    path = str(data / cls / name)
    assert path in skipped, sorted(skipped)
    assert BROKEN[(cls, name)] in skipped[path], skipped[path]


def test_odd_but_readable_images_are_audited(messy_audit) -> None:
    data, out, _ = messy_audit
    skipped = _skipped_by_name(out)
    for cls, name in ODD_BUT_READABLE:
        assert str(data / cls / name) not in skipped, (name, skipped.get(str(data / cls / name)))
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    # 3 good PNGs per class + every odd-but-readable file
    assert audit_json["dataset"]["audited_images"] == 9 + len(ODD_BUT_READABLE)
    assert audit_json["dataset"]["test_images"] == 9 + len(ODD_BUT_READABLE) + len(BROKEN)


def test_hidden_files_and_macosx_are_ignored(messy_audit) -> None:
    data, out, _ = messy_audit
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert sorted(audit_json["dataset"]["classes"]) == sorted([SPACES, UNICODE, HTML])
    for path in _skipped_by_name(out):
        parts = Path(path).relative_to(data).parts
        assert "__MACOSX" not in parts and not any(p.startswith(".") for p in parts), path


def test_non_image_file_and_empty_class_are_recorded(messy_audit) -> None:
    data, out, _ = messy_audit
    skipped = _skipped_by_name(out)
    assert "not an image file" in skipped[str(data / SPACES / "notes.txt")]
    assert "empty class folder" in skipped[str(data / "empty class")]
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert "empty class" not in audit_json["dataset"]["classes"]
    assert any("skipped" in f["statement"] for f in audit_json["findings"])


def test_class_folder_names_escaped_in_html_and_kept_in_json(messy_audit) -> None:
    _, out, _ = messy_audit
    html = (out / "report.html").read_text(encoding="utf-8")
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert set(audit_json["dataset"]["classes"]) == {SPACES, UNICODE, HTML}
    assert HTML not in html
    assert "&lt;img src=x onerror=" in html
    assert UNICODE in html and SPACES in html


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = read_image(str(exif_rotated_jpeg(tmp_path / "rot.jpg")))
    assert img.size == (20, 30)  # stored 30 wide x 20 high; upright it is 20 wide x 30 high
    arr = np.asarray(img.convert("RGB")).astype(int)
    top_right, top_left = arr[:10, 10:].mean(axis=(0, 1)), arr[:10, :10].mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1] < 60  # the red block moved to the top right
    assert top_left[0] < 60


def test_extreme_aspect_ratio_is_cropped_before_resizing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 30000 x 1 strip for a 224 x 224 model: resizing first would allocate 18 GB."""
    import reporter.data.transforms as transforms

    real = transforms.F.interpolate
    sizes: list[tuple[int, ...]] = []

    def guarded(x, size=None, **kw):
        sizes.append(tuple(size))
        assert size[0] * size[1] <= 224 * 224, f"intermediate of {size} pixels"
        return real(x, size=size, **kw)

    monkeypatch.setattr(transforms.F, "interpolate", guarded)
    pre = transforms.Preprocess((224, 224), 3, [0.5], [0.5])
    for img in (Image.new("RGB", (30000, 1), (200, 0, 0)), Image.new("L", (1, 30000), 90)):
        x = pre.to_unit(img)
        assert x.shape == (3, 224, 224) and torch.isfinite(x).all()
    assert sizes == [(224, 224), (224, 224)]


def test_rgb_images_for_a_grayscale_model(tmp_path: Path, digits_checkpoint: Path) -> None:
    data = tmp_path / "data"
    for digit in range(10):
        (data / str(digit)).mkdir(parents=True)
        noise_image(seed=digit).save(data / str(digit) / "rgb.png")
        noise_image(seed=digit, mode="RGBA").save(data / str(digit) / "rgba.png")
    out = tmp_path / "out"
    result = audit("--model", str(digits_checkpoint), "--data", str(data), "--out", str(out),
                   "--format", "json", *LEAN)  # fmt: skip
    assert_ok(result)
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert audit_json["dataset"]["audited_images"] == 20
    assert audit_json["skipped"] == []


# ------------------------------------------------------------ data and model that do not fit


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("small") / "data", {"a": 2, "b": 2, "c": 2})


def test_one_class_folder_exits_2(tmp_path: Path, digits_checkpoint: Path) -> None:
    data = make_image_folder(tmp_path / "data", {"only": 4})
    (data / "empty").mkdir()
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(digits_checkpoint), "--data", str(data), "--out", str(out))
    assert_user_error(result, "only one class", "at least two class folders")
    assert_previous_intact(out)


def test_class_count_mismatch_names_both_counts(
    tmp_path: Path, digits_checkpoint: Path, small_folder: Path
) -> None:
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(digits_checkpoint), "--data", str(small_folder), "--out",
                   str(out), *LEAN)  # fmt: skip
    assert_user_error(result, "10 output classes", "has 3")
    assert_previous_intact(out)


def test_checkpoint_for_another_architecture_lists_keys(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    state = torch.load(digits_checkpoint, weights_only=True)["state_dict"]
    bare = tmp_path / "gapnet_weights.pt"
    torch.save(state, bare)
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(bare), "--arch", "resnet18", "--out", str(out), *LEAN)
    assert_user_error(result, "do not fit architecture 'resnet18'", "missing keys:",
                      "unexpected keys:", "features.conv1.weight")  # fmt: skip
    assert_previous_intact(out)


def _torchscript_lookalike_zip() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"not a pickle")
    return buf.getvalue()


NOT_CHECKPOINTS = {
    "empty.pt": b"",
    "text.pt": b"hello, I am a README\n",
    "random.pth": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    "image.pt": encoded(noise_image(), "PNG"),
    "zip.pt": _torchscript_lookalike_zip(),
    "json.ckpt": b'{"state_dict": {}}',
}


@pytest.mark.parametrize("name", sorted(NOT_CHECKPOINTS))
def test_file_that_is_not_a_checkpoint_exits_2(
    tmp_path: Path, small_folder: Path, name: str
) -> None:
    model = tmp_path / name
    model.write_bytes(NOT_CHECKPOINTS[name])
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(model), "--data", str(small_folder), "--out", str(out), *LEAN)
    message = assert_user_error(result, str(model))
    assert "checkpoint" in message
    assert_previous_intact(out)


def test_unknown_layer_lists_close_names(tmp_path: Path, digits_checkpoint: Path) -> None:
    out = tmp_path / "out"
    seed_previous(out)
    for layers, close in (("nope", "features"), ("features.rleu4", "features.relu4")):
        result = audit("--model", str(digits_checkpoint), "--layers", layers, "--out", str(out),
                       "--max-images", "10", *LEAN)  # fmt: skip
        assert_user_error(result, repr(layers), close)
        assert_previous_intact(out)


def test_unknown_method_exits_2(tmp_path: Path, digits_checkpoint: Path) -> None:
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(digits_checkpoint), "--out", str(out), "--methods", "gradcma")
    assert_user_error(result, "Unknown method 'gradcma'", "gradcam")
    assert_previous_intact(out)


def test_cam_on_resnet18_names_gradcam(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pt"
    torch.save(build_model("resnet18", 10, 1).state_dict(), weights)
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(weights), "--arch", "resnet18", "--input-size", "32",
                   "--methods", "cam", "--max-images", "10", "--out", str(out),
                   "--featvis-channels", "0", "--trust-samples", "0", "--quiet")  # fmt: skip
    message = assert_user_error(result, "gradcam")
    assert "cam" in message.lower()
    assert_previous_intact(out)


def _nan_for_bright_red(model: torch.nn.Module) -> None:
    """conv1 channel 0 multiplies the red input by +inf: dark-red pixels give -inf (ReLU: 0),
    bright-red pixels give +inf, which turns into inf - inf = NaN one layer later."""
    model.features.conv1.weight[0] = 0.0
    model.features.conv1.weight[0, 0, 1, 1] = float("inf")


def test_model_that_outputs_nan_for_some_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for ci, cls in enumerate(("dark", "mixed")):
        (data / cls).mkdir(parents=True)
        for j in range(4):
            arr = rng.integers(0, 60, size=(16, 16, 3), dtype=np.uint8)  # red < mean: finite
            if cls == "mixed" and j % 2 == 0:
                arr[4:12, 4:12, 0] = 250  # bright red: NaN output
            arr[:, :, 1 + ci] += 40
            Image.fromarray(arr).save(data / cls / f"{j}.png")
    model = make_checkpoint(tmp_path / "nan.pt", num_classes=2, edit=_nan_for_bright_red)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "html,json", *LEAN)  # fmt: skip
    assert_ok(result)
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert audit_json["dataset"]["audited_images"] == 8
    assert audit_json["metrics"]["nan_predictions"] == 2
    assert audit_json["explanations"]["flagged_maps"] >= 2
    findings = " ".join(f["statement"] for f in audit_json["findings"])
    assert "NaN" in findings and "not a number" in findings
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "not a number" in html


# ------------------------------------------------------------------------------ hostile input


class _CreatesFileWhenUnpickled:
    """Unpickling this runs ``open(path, "w")``: the file appears only if code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path: Path, small_folder: Path) -> None:
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _CreatesFileWhenUnpickled(str(marker))},
               evil)  # fmt: skip
    assert not marker.exists()
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(evil), "--data", str(small_folder), "--out", str(out), *LEAN)
    assert_user_error(result, "Refusing to load it", "--trust-checkpoint")
    assert not marker.exists()
    assert_previous_intact(out)
    # the other verbs refuse it too
    for args in (["layers", str(evil)], ["predict", str(evil), "--data", str(small_folder)]):
        result = CliRunner().invoke(cli, args)
        assert_user_error(result, "Refusing to load it")
        assert not marker.exists()


HOSTILE_NAMES = [
    '<img src="file:///etc/passwd">',
    "http://127.0.0.1:9/beacon.png",
    '<link rel="stylesheet" href="http://127.0.0.1:9/x.css">',
    "<script>fetch('http://127.0.0.1:9/')</script>",
    '"><svg onload=alert(1)>',
]


def _tags_and_urls(html: str) -> tuple[set[str], list[str]]:
    """Tag names and every src/href value of an HTML document, as a browser would parse them."""
    from html.parser import HTMLParser

    tags: set[str] = set()
    urls: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            urls.extend(v or "" for k, v in attrs if k in ("src", "href", "srcset", "data"))

    Collect().feed(html)
    return tags, urls


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any attempt to open a connection or resolve a name fails the test (and is recorded)."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:200])
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_hostile_class_names_escaped_and_pdf_fetches_nothing(
    tmp_path: Path,
    digits_checkpoint: Path,
    no_network: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = torch.load(digits_checkpoint, weights_only=True)
    payload["meta"]["class_names"] = HOSTILE_NAMES + [str(i) for i in range(5, 10)]
    model = tmp_path / "hostile.pt"
    torch.save(payload, model)

    import reporter.report.render as render

    fetched: list[str] = []
    original = render._confined_fetcher

    def spying_fetcher(base_dir):
        fetcher = original(base_dir)
        inner = fetcher.fetch

        def fetch(url, headers=None):
            fetched.append(url)
            return inner(url, headers)

        fetcher.fetch = fetch
        return fetcher

    monkeypatch.setattr(render, "_confined_fetcher", spying_fetcher)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", "digits", "--out", str(out), "--format",
                   "html,pdf,json", "--max-images", "20", *LEAN)  # fmt: skip
    assert_ok(result)
    assert no_network == []
    assert all(u.startswith("data:") for u in fetched), fetched
    html = (out / "report.html").read_text(encoding="utf-8")
    for name in HOSTILE_NAMES:
        if "<" in name:
            assert name not in html, name
    assert "&lt;img src=&#34;file:///etc/passwd&#34;&gt;" in html or "&lt;img src=" in html
    # every URL the parsed HTML could load is an embedded data: URI (or an in-page anchor)
    tags, urls = _tags_and_urls(html)
    assert urls and all(u.startswith(("data:", "#")) for u in urls), sorted(set(urls))[:5]
    assert not tags & {"link", "iframe", "object", "embed"}, tags
    # the one script is the theme's own lightbox, byte for byte: nothing from the data in it
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    theme = (Path(reporter.__file__).parent.parent / "templates" / "base.html").read_text()
    assert len(scripts) == 1 and scripts[0][0] == "", scripts
    assert scripts[0][1] in theme
    audit_json = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert audit_json["dataset"]["classes"][: len(HOSTILE_NAMES)] == HOSTILE_NAMES
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.html"
    path.write_text("TOPSECRET-7d1f\n", encoding="utf-8")
    return path


def _template_audit(tmp_path: Path, model: Path, template_dir: Path) -> tuple[Result, Path]:
    out = tmp_path / "out"
    seed_previous(out)
    result = audit("--model", str(model), "--out", str(out), "--template-dir", str(template_dir),
                   "--format", "html,json", "--max-images", "10", *LEAN)  # fmt: skip
    return result, out


def test_template_dir_include_with_dotdot_is_refused(
    tmp_path: Path, digits_checkpoint: Path, secret: Path
) -> None:
    tdir = tmp_path / "theme"
    tdir.mkdir()
    (tdir / "report.html").write_text('{% include "../secret.html" %}', encoding="utf-8")
    result, out = _template_audit(tmp_path, digits_checkpoint, tdir)
    assert_user_error(result, "../secret.html")
    assert "TOPSECRET" not in result.output
    assert_previous_intact(out)


def test_template_dir_include_of_symlink_out_is_refused(
    tmp_path: Path, digits_checkpoint: Path, secret: Path
) -> None:
    tdir = tmp_path / "theme"
    tdir.mkdir()
    (tdir / "part.html").symlink_to(secret)
    (tdir / "report.html").write_text('{% include "part.html" %}', encoding="utf-8")
    result, out = _template_audit(tmp_path, digits_checkpoint, tdir)
    assert_user_error(result, "part.html")
    assert "TOPSECRET" not in result.output
    assert_previous_intact(out)


def test_template_dir_report_symlink_out_is_refused(
    tmp_path: Path, digits_checkpoint: Path, secret: Path
) -> None:
    tdir = tmp_path / "theme"
    tdir.mkdir()
    (tdir / "report.html").symlink_to(secret)
    result, out = _template_audit(tmp_path, digits_checkpoint, tdir)
    assert "TOPSECRET" not in result.output
    assert not (out / "report.html").read_bytes().startswith(b"TOPSECRET")
    assert_user_error(result, "report.html")
    assert_previous_intact(out)


def test_template_dir_symlink_leaks_nothing(
    tmp_path: Path, digits_checkpoint: Path, secret: Path
) -> None:
    """Whatever the exit status, a symlinked report.html never puts the secret in the report."""
    tdir = tmp_path / "theme"
    tdir.mkdir()
    (tdir / "report.html").symlink_to(secret)
    result, out = _template_audit(tmp_path, digits_checkpoint, tdir)
    assert "Traceback" not in result.output and "TOPSECRET" not in result.output
    for name, data in folder_snapshot(out).items():
        assert b"TOPSECRET" not in data, name
    assert os.path.isdir(out)


# -------------------------------------------------- class names the figures cannot draw


def _two_class_audit(tmp_path: Path, names: tuple[str, str]) -> tuple[Result, Path]:
    data = make_image_folder(tmp_path / "data", {names[0]: 2, names[1]: 2})
    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    out = tmp_path / "out"
    result = audit("--model", str(model), "--data", str(data), "--out", str(out), "--format",
                   "html,json", *LEAN)  # fmt: skip
    return result, out


@pytest.mark.parametrize("name", ["$_$", r"$\frac$"])
def test_class_name_with_dollar_signs(tmp_path: Path, name: str) -> None:
    result, out = _two_class_audit(tmp_path, (name, "plain"))
    assert_ok(result)
    assert (
        name in json.loads((out / "audit.json").read_text(encoding="utf-8"))["dataset"]["classes"]
    )


def test_class_name_in_a_script_the_figure_font_lacks(tmp_path: Path) -> None:
    result, _ = _two_class_audit(tmp_path, ("猫 cat", "dog"))
    assert_ok(result)
