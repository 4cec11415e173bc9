"""The ``shapes-patch`` variant (a corner watermark on one class) and the ``--train-data`` fix."""

from __future__ import annotations

import pytest
import torch

from reporter.data import load_dataset
from reporter.data.registry import registered_datasets
from reporter.data.shapes import PATCH_COLOUR, generate_shapes
from reporter.errors import ReporterError
from tests.conftest import make_image_folder


def test_patch_only_on_its_class_and_masks_stay_exact():
    d = generate_shapes(200, size=32, seed=1, patch=1.0, patch_class=2)
    assert d.patch_box == (0, 0, 4, 4) and d.patch_class == 2
    assert torch.equal(d.has_patch, d.labels == 2)
    corner = d.images[:, :4, :4].reshape(len(d), -1, 3)
    is_patch = (corner == torch.tensor(PATCH_COLOUR, dtype=torch.uint8)).all(-1).all(-1)
    assert torch.equal(is_patch, d.labels == 2)
    assert not d.masks[d.has_patch][:, :4, :4].any()
    # masks exact: a pixel has the shape colour exactly where the mask is true
    colour = d.shape_colours[:, None, None, :]
    assert torch.equal((d.images == colour).all(-1), d.masks)


def test_patch_test_split_kept_or_absent_and_rest_unchanged():
    kept = generate_shapes(80, size=32, seed=4, patch=1.0, split="test", shortcut="kept")
    absent = generate_shapes(80, size=32, seed=4, patch=1.0, split="test", shortcut="absent")
    plain = generate_shapes(80, size=32, seed=4, split="test")
    assert kept.has_patch.sum() == (kept.labels == 0).sum()
    assert not absent.has_patch.any()
    # the patch's draws come last: without a patch the images are those of patch=0
    assert torch.equal(absent.images, plain.images)
    off = ~kept.has_patch
    assert torch.equal(kept.images[off], plain.images[off])
    assert torch.equal(kept.images[:, 4:], plain.images[:, 4:])


def test_patch_probability_and_validation():
    d = generate_shapes(400, size=32, seed=0, patch=0.5)
    rate = float(d.has_patch[d.labels == 0].float().mean())
    assert 0.35 < rate < 0.65
    with pytest.raises(ValueError, match="patch"):
        generate_shapes(4, patch=1.5)
    with pytest.raises(ValueError, match="patch_class"):
        generate_shapes(4, patch=1.0, patch_class=7)


def test_registry_shapes_patch():
    assert "shapes-patch" in registered_datasets()
    kept = load_dataset("shapes-patch", shortcut="kept")
    absent = load_dataset("shapes-patch")
    assert "corner patch" in kept.name and kept.masks
    magenta = torch.tensor(PATCH_COLOUR, dtype=torch.float32)[:, None, None] / 255

    def patched(ds) -> torch.Tensor:
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        return ((x[:, :, :4, :4] - magenta).abs() < 1e-6).flatten(1).all(1)

    labels = torch.as_tensor([kept.test[i][1] for i in range(len(kept.test))])
    assert torch.equal(patched(kept.test), labels == 0)
    assert not patched(absent.test).any()
    train_labels = torch.as_tensor([kept.train[i][1] for i in range(len(kept.train))])
    assert torch.equal(patched(kept.train), train_labels == 0)


def test_train_data_wins_over_default_digits(tmp_path):
    train = make_image_folder(tmp_path / "train", {"cat": 4, "dog": 4})
    test = make_image_folder(tmp_path / "test", {"cat": 2, "dog": 2}, seed=1)
    # the CLI passes its default --data digits together with --train-data
    bundle = load_dataset("digits", train_path=str(train), test_path=str(test))
    assert bundle.class_names == ["cat", "dog"]
    assert bundle.name == str(train)
    assert len(bundle.train) == 8 and len(bundle.test) == 4
    with pytest.raises(ReporterError, match="cannot be combined"):
        load_dataset("shapes", train_path=str(train))
