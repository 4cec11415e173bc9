"""Datasets: digits, image folders with bad files, preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reporter.data import Preprocess, load_dataset, make_loader, pil_to_tensor, stratified_split
from reporter.errors import ReporterError
from tests.conftest import make_image_folder


def test_digits_split_is_fixed_and_stratified() -> None:
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert len(a.train) + len(a.test) == 1797
    assert a.test.images.shape[1:] == (1, 32, 32)
    assert torch.equal(a.test.images, b.test.images)
    counts = np.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 40 and counts.max() <= 50
    assert a.channels == 1 and a.input_size == (32, 32)
    assert a.fingerprint() == b.fingerprint()


def test_stratified_split_keeps_every_class_in_train() -> None:
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1)
    train, test = stratified_split(labels, 0.5, seed=3)
    assert set(labels[train]) == {0, 1, 2}
    assert len(set(train) & set(test)) == 0
    assert len(train) + len(test) == len(labels)


def test_folder_bad_files_are_skipped_and_recorded(tmp_path: Path) -> None:
    import weasyprint  # noqa: F401 - it sets ImageFile.LOAD_TRUNCATED_IMAGES = True on import

    root = make_image_folder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "text.jpg").write_text("not an image")
    good = (root / "b" / "img_000.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "notes.txt").write_text("hello")
    (root / "b" / ".DS_Store").write_bytes(b"\0\1")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "x.png").write_bytes(b"junk")
    bundle = load_dataset(str(root), test_only=True)
    assert bundle.class_names == ["a", "b"]
    assert any(s["path"].endswith("notes.txt") for s in bundle.skipped)
    assert not any(".DS_Store" in s["path"] or "__MACOSX" in s["path"] for s in bundle.skipped)
    bundle.set_transform(Preprocess((16, 16), 3, [0.5] * 3, [0.5] * 3))
    skipped = []
    seen = 0
    for batch in make_loader(bundle.test, batch_size=4):
        skipped += [bundle.test.describe(i) for i, _ in batch.skipped]
        seen += len(batch)
    names = sorted(Path(s).name for s in skipped)
    assert names == ["empty.png", "text.jpg", "truncated.png"]
    assert seen == 12


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "not found"),
        ("empty", "no class subfolders"),
        ("one-class", "only one class"),
        ("no-images", "no image files"),
    ],
)
def test_folder_errors_name_the_path(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    elif layout == "one-class":
        make_image_folder(root, {"only": 3})
    elif layout == "no-images":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
    with pytest.raises(ReporterError, match=message) as err:
        load_dataset(str(root))
    assert str(root) in str(err.value)


def test_folder_split_is_seeded(image_folder: Path) -> None:
    a = load_dataset(str(image_folder), seed=1)
    b = load_dataset(str(image_folder), seed=1)
    assert a.test.files == b.test.files
    assert not set(a.test.files) & set(a.train.files)
    assert len(a.train) + len(a.test) == 24


def test_unknown_dataset_name() -> None:
    with pytest.raises(ReporterError, match="Unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_preprocess_roundtrip_and_channel_adaptation() -> None:
    pre = Preprocess((8, 8), 3, [0.2, 0.3, 0.4], [0.5, 0.5, 0.5])
    gray = torch.rand(1, 8, 8)
    x = pre(gray)
    assert x.shape == (3, 8, 8)
    assert torch.allclose(pre.denormalize(x), gray.expand(3, 8, 8), atol=1e-6)
    rect = Image.new("RGB", (40, 20), (255, 0, 0))
    assert pre.to_unit(rect).shape == (3, 8, 8)


@pytest.mark.parametrize("mode", ["I;16", "P", "RGBA", "LA", "CMYK", "1"])
def test_pil_modes_become_unit_tensors(mode: str) -> None:
    if mode == "I;16":
        img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    else:
        img = Image.new(mode, (4, 4))
    x = pil_to_tensor(img)
    assert x.shape[0] in (1, 3) and x.shape[1:] == (4, 4)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    if mode == "I;16":
        assert float(x.max()) == 1.0


def test_load_unit_is_a_unit_tensor_with_or_without_a_transform(tmp_path: Path) -> None:
    # without a transform a file dataset returned the Pillow image itself (found by mypy)
    root = make_image_folder(tmp_path / "d", {"a": 1, "b": 1}, size=20)
    bundle = load_dataset(str(root), test_only=True)
    raw = bundle.test.load_unit(0)
    assert isinstance(raw, torch.Tensor) and raw.shape == (3, 20, 20)
    assert raw.dtype == torch.float32 and raw.min() >= 0.0 and raw.max() <= 1.0
    bundle.set_transform(Preprocess((8, 8), 1, [0.5], [0.5]))
    unit = bundle.test.load_unit(0)
    assert unit.shape == (1, 8, 8) and unit.min() >= 0.0 and unit.max() <= 1.0
    bundle.set_transform(lambda image: image)
    with pytest.raises(TypeError, match="Preprocess"):
        bundle.test.load_unit(0)
