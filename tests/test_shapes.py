"""The shapes generator: exact masks, determinism, the spurious background statistics."""

from __future__ import annotations

import pytest
import torch

from reporter.data.shapes import (
    BACKGROUND_PALETTE,
    SHAPE_CLASSES,
    SHAPE_PALETTE,
    TEXTURE_AMPLITUDE,
    ShapesDataset,
    generate_shapes,
)


@pytest.fixture(scope="module")
def data():
    return generate_shapes(300, size=48, seed=3, spurious=0.5)


def test_shapes_and_types(data):
    assert data.images.shape == (300, 48, 48, 3) and data.images.dtype == torch.uint8
    assert data.masks.shape == (300, 48, 48) and data.masks.dtype == torch.bool
    assert data.labels.shape == (300,) and data.labels.dtype == torch.int64
    assert data.class_names == list(SHAPE_CLASSES[:4])
    assert torch.bincount(data.labels).tolist() == [75, 75, 75, 75]  # balanced
    f = data.float_images()
    assert f.shape == (300, 3, 48, 48) and f.dtype == torch.float32
    assert float(f.min()) >= 0.0 and float(f.max()) <= 1.0


def test_masks_match_pixels(data):
    # Inside the mask every pixel has the shape's colour exactly ...
    colour = data.shape_colours[:, None, None, :].expand_as(data.images)
    same = (data.images == colour).all(dim=-1)
    assert torch.equal(same & data.masks, data.masks)
    # ... and outside no pixel has it (backgrounds stay near their own muted colour).
    assert not (same & ~data.masks).any()
    bg = data.background_colours[:, None, None, :].int()
    dev = (data.images.int() - bg).abs().amax(dim=-1)
    assert int(dev[~data.masks].max()) <= TEXTURE_AMPLITUDE + 1
    # Every image holds a visible object that is not clipped by the frame.
    area = data.masks.flatten(1).float().mean(1)
    assert float(area.min()) > 0.02
    edge = data.masks[:, 0].any(1) | data.masks[:, -1].any(1)
    edge |= data.masks[:, :, 0].any(1) | data.masks[:, :, -1].any(1)
    assert not edge.any()


def test_palettes_are_separated():
    for fg in SHAPE_PALETTE:
        for bg in BACKGROUND_PALETTE:
            assert max(abs(a - b) for a, b in zip(fg, bg, strict=True)) > 2 * TEXTURE_AMPLITUDE


def test_shape_colour_is_independent_of_class():
    d = generate_shapes(2000, size=16, seed=0)
    table = torch.zeros(4, len(SHAPE_PALETTE))
    palette = torch.tensor(SHAPE_PALETTE, dtype=torch.uint8)
    idx = (d.shape_colours[:, None, :] == palette[None]).all(-1).int().argmax(1)
    table.index_put_((d.labels, idx), torch.ones(2000), accumulate=True)
    share = table / table.sum(1, keepdim=True)
    assert float((share - 1 / len(SHAPE_PALETTE)).abs().max()) < 0.06


def test_determinism_and_splits():
    a = generate_shapes(50, size=32, seed=7, spurious=0.3)
    b = generate_shapes(50, size=32, seed=7, spurious=0.3)
    c = generate_shapes(50, size=32, seed=8, spurious=0.3)
    t = generate_shapes(50, size=32, seed=7, spurious=0.3, split="test")
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, t.images)  # same seed, other split: other images


@pytest.mark.parametrize(
    ("spurious", "split", "shortcut", "expected"),
    [
        (0.0, "train", "absent", 0.25),
        (0.8, "train", "absent", 0.8 + 0.2 / 4),
        (1.0, "train", "absent", 1.0),
        (0.8, "test", "absent", 0.25),
        (0.8, "test", "kept", 0.8 + 0.2 / 4),
    ],
)
def test_spurious_statistics(spurious, split, shortcut, expected):
    d = generate_shapes(4000, size=16, seed=1, spurious=spurious, split=split, shortcut=shortcut)
    rate = float(d.shortcut_match.float().mean())
    assert rate == pytest.approx(expected, abs=0.03)
    palette = torch.tensor(BACKGROUND_PALETTE, dtype=torch.uint8)
    assert torch.equal(d.background_colours, palette[d.background_index])


def test_other_sizes_and_classes():
    d = generate_shapes(12, size=(20, 40), seed=0, classes=SHAPE_CLASSES)
    assert d.images.shape == (12, 20, 40, 3)
    assert d.class_names == list(SHAPE_CLASSES)
    assert generate_shapes(0).images.shape == (0, 64, 64, 3)
    assert generate_shapes(6, classes=2).class_names == ["circle", "square"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spurious": 1.5},
        {"split": "val"},
        {"shortcut": "maybe"},
        {"classes": ["circle", "hexagon"]},
        {"classes": 1},
        {"size": 8},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_shapes(4, **kwargs)


def test_dataset():
    ds = ShapesDataset(10, size=24, seed=2)
    image, label = ds[3]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    assert isinstance(label, int) and label == int(ds.targets[3])
    assert ds.masks.shape == (10, 24, 24)
    assert len(ds) == 10 and ds.classes == list(SHAPE_CLASSES[:4])
    assert torch.equal(image, ds.data.float_images()[3])
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 24, 24) and y.shape == (4,)
