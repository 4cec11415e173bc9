"""Pointing game, energy pointing game, shortcut scores and method agreement on hand-made maps."""

from __future__ import annotations

import pytest
import torch

from reporter.data.shapes import generate_shapes
from reporter.metrics.trust import (
    agreement_summary,
    border_fraction,
    border_share,
    dilate,
    energy_pointing_game,
    location_agreement,
    method_agreement,
    outside_fraction,
    per_class,
    pointing_game,
    shortcut_scores,
)


def _square_masks(b: int = 4, size: int = 16) -> torch.Tensor:
    masks = torch.zeros(b, size, size, dtype=torch.bool)
    masks[:, 4:10, 5:11] = True
    return masks


def test_map_inside_the_mask_scores_one_and_hits():
    masks = _square_masks()
    sal = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(0)) * masks
    assert torch.allclose(energy_pointing_game(sal, masks), torch.ones(4))
    assert pointing_game(sal, masks).all()
    assert torch.allclose(outside_fraction(sal, masks), torch.zeros(4))


def test_map_outside_the_mask_scores_zero_and_misses():
    masks = _square_masks()
    sal = (~masks).float()
    sal[:, 0, 0] = 2.0
    assert torch.allclose(energy_pointing_game(sal, masks), torch.zeros(4))
    assert not pointing_game(sal, masks).any()


def test_uniform_and_empty_maps_score_the_area():
    masks = _square_masks()
    area = 36 / 256
    for sal in (torch.ones(4, 16, 16), torch.zeros(4, 16, 16)):
        assert torch.allclose(energy_pointing_game(sal, masks), torch.full((4,), area))
        assert not pointing_game(sal, masks).any()  # a plateau mostly off the object


def test_pointing_tolerance():
    masks = _square_masks(b=1)
    sal = torch.zeros(1, 16, 16)
    sal[0, 12, 7] = 1.0  # three rows below the object (last object row is 9)
    assert not pointing_game(sal, masks).item()
    assert not pointing_game(sal, masks, tolerance=2).item()
    assert pointing_game(sal, masks, tolerance=3).item()
    assert dilate(masks, 1).sum() == 36 + 4 * 6


def test_low_resolution_maps_are_resized():
    masks = _square_masks(b=2)
    low = torch.zeros(2, 4, 4)
    low[:, 1, 2] = 1.0  # covers rows 4-7, cols 8-11 at 16x16
    assert pointing_game(low, masks).all()
    assert (energy_pointing_game(low, masks) > 0.5).all()


def test_per_class():
    values = torch.tensor([1.0, 0.0, 1.0, 1.0])
    labels = torch.tensor([0, 0, 2, 2])
    out = per_class(values, labels, ["a", "b", "c"])
    assert out == {"a": {"mean": 0.5, "n": 2}, "c": {"mean": 1.0, "n": 2}}
    hits = per_class(torch.tensor([True, False]), torch.tensor([1, 1]), ["a", "b"])
    assert hits == {"b": {"mean": 0.5, "n": 2}}


def test_border_fraction():
    sal = torch.zeros(3, 20, 20)
    sal[0, 0, :] = 1.0  # all on the border
    sal[1, 8:12, 8:12] = 1.0  # all central
    sal[2] = 1.0  # uniform
    frac = border_fraction(sal, border=0.15)
    share = border_share(20, 20, 0.15)
    assert share == pytest.approx(1 - (14 * 14) / 400)
    assert frac.tolist() == pytest.approx([1.0, 0.0, share])


def test_location_agreement():
    same = torch.zeros(6, 16, 16)
    same[:, 0:3, 0:3] = 1.0
    assert location_agreement(same) == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    scattered = torch.rand(200, 16, 16, generator=gen)
    assert abs(location_agreement(scattered)) < 0.05
    assert location_agreement(same[:1]) == 0.0
    big = torch.zeros(4, 128, 128)
    big[:, :10, :10] = 1.0
    assert location_agreement(big) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def shapes():
    return generate_shapes(200, size=32, seed=5)


def test_shortcut_flag_on_background_maps(shapes):
    masks = shapes.masks
    on_object = masks.float() * torch.rand(masks.shape, generator=torch.Generator().manual_seed(1))
    on_background = (~masks).float()
    uniform = torch.ones(masks.shape)
    clean = shortcut_scores(on_object, shapes.labels, shapes.class_names, masks)
    spurious = shortcut_scores(on_background, shapes.labels, shapes.class_names, masks)
    flat = shortcut_scores(uniform, shapes.labels, shapes.class_names, masks)
    assert set(clean) == set(shapes.class_names)
    assert not any(s["flagged"] for s in clean.values())
    assert all(s["flagged"] for s in spurious.values())
    assert all(s["flagged"] for s in flat.values())  # no more on the object than chance
    scores = clean["circle"]
    assert scores["basis"] == "mask" and scores["energy_inside"] == pytest.approx(1.0)
    assert spurious["circle"]["lift"] == pytest.approx(0.0)
    assert flat["circle"]["lift"] == pytest.approx(1.0)
    # Evidence: the class's images, the most off-object first.
    ev = spurious["square"]["evidence"]
    assert len(ev) == 4 and all(int(shapes.labels[i]) == 1 for i in ev)


def test_shortcut_small_objects_with_blurry_maps_are_not_flagged():
    # A coarse blob centred on a small object spills outside it but is still far denser on it.
    masks = torch.zeros(8, 64, 64, dtype=torch.bool)
    masks[:, 28:36, 28:36] = True  # 1.6% of the image
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = torch.exp(-((yy - 31.5) ** 2 + (xx - 31.5) ** 2) / (2 * 8.0**2)).expand(8, 64, 64)
    labels = torch.zeros(8, dtype=torch.long)
    scores = shortcut_scores(blob, labels, ["obj"], masks)["obj"]
    assert scores["outside_fraction"] > 0.5 and scores["lift"] > 2.0
    assert not scores["flagged"]


def test_shortcut_without_masks_uses_the_border():
    sal = torch.zeros(6, 32, 32)
    sal[:3, :3, :] = 1.0  # class 0: top band
    sal[3:, 12:20, 12:20] = 1.0  # class 1: centre
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    out = shortcut_scores(sal, labels, ["edge", "centre"])
    assert out["edge"]["flagged"] and out["edge"]["basis"] == "border"
    assert out["edge"]["border_excess"] == pytest.approx(1.0)
    assert not out["centre"]["flagged"]
    assert "energy_inside" not in out["centre"]
    assert out["edge"]["location_agreement"] == pytest.approx(1.0)


def test_shortcut_bad_labels():
    with pytest.raises(ValueError):
        shortcut_scores(torch.zeros(3, 8, 8), torch.zeros(2, dtype=torch.long), ["a"])


def test_method_agreement():
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    a = (yy + xx) / 14 + 0.1 * torch.rand(5, 8, 8, generator=gen)  # smooth, plus noise
    maps = {"gradcam": a, "cam": a * 2, "inverse": -a, "coarse": a[:, ::2, ::2]}
    pairs = method_agreement(maps)
    assert len(pairs) == 6
    assert torch.allclose(pairs[("gradcam", "cam")], torch.ones(5))
    assert torch.allclose(pairs[("gradcam", "inverse")], -torch.ones(5))
    assert (pairs[("gradcam", "coarse")] > 0.8).all()
    from reporter.metrics.trust._common import resize_maps
    from reporter.metrics.trust.sanity import rank_correlation

    same = {k: resize_maps(v.float(), (8, 8)) for k, v in maps.items()}
    for (x, y), rho in pairs.items():  # each method ranked once: the pairwise Spearman
        assert torch.allclose(rho, rank_correlation(same[x], same[y]))
    summary = agreement_summary(pairs)
    assert summary["cam"]["gradcam"] == pytest.approx(1.0) == summary["gradcam"]["gradcam"]
    assert summary["inverse"]["cam"] == pytest.approx(-1.0)
    assert method_agreement({}) == {}
    with pytest.raises(ValueError):
        method_agreement({"a": a, "b": a[:3]})
