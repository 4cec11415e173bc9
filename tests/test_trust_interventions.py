"""Shortcut detection by intervention, on hand-built models whose cue is known exactly.

- ``ObjectModel`` reads only the object (the brightest channel among bright pixels).
- ``BackgroundModel`` reads only the background colour (mean colour of the dark pixels).
- ``PatchModel`` reads only the top-left 4 x 4 corner: class 0's logit is the corner's mean.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from reporter.data.shapes import BACKGROUND_PALETTE, generate_shapes
from reporter.metrics.trust.interventions import (
    background_swap,
    bootstrap_interval,
    class_mean_maps,
    consistent_region,
    fill_box,
    region_ablation,
    region_paste,
    region_shortcuts,
    wilson_interval,
)
from reporter.metrics.trust.shortcut import shortcut_scores

K = 3
BG = torch.tensor([[0.10, 0.30, 0.10], [0.10, 0.10, 0.35], [0.35, 0.10, 0.10]])
FG = torch.eye(3) * 0.85 + 0.1  # class k's object is bright in channel k only


def objects_data(n: int = 60, size: int = 24, seed: int = 0, *, spurious: bool = True):
    """Coloured squares on textured backgrounds; background coloured by class when spurious."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    bg_idx = labels if spurious else torch.randint(K, (n,), generator=g)
    images = BG[bg_idx][:, :, None, None] + 0.05 * (torch.rand(n, 3, size, size, generator=g) - 0.5)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    pos = torch.randint(1, size - 7, (n, 2), generator=g)
    for i in range(n):
        y, x = pos[i].tolist()
        masks[i, y : y + 6, x : x + 6] = True
    images = torch.where(masks[:, None], FG[labels][:, :, None, None], images)
    return images, masks, labels


class ObjectModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x - 0.6).flatten(2).amax(dim=2) * 10


class BackgroundModel(nn.Module):
    def __init__(self, palette: torch.Tensor, bright: float = 0.6) -> None:
        super().__init__()
        self.register_buffer("palette", palette)
        self.bright = bright

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = (x.amax(dim=1, keepdim=True) < self.bright).float()
        mean = (x * dark).flatten(2).sum(-1) / dark.flatten(2).sum(-1).clamp(min=1)
        return -((mean[:, None, :] - self.palette[None]) ** 2).sum(-1) * 100


class PatchModel(nn.Module):
    """Class 0 logit = 20 * (mean of the top-left 4x4 pixels - 0.5); the others 0."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 20 * (x[:, :, :4, :4].mean(dim=(1, 2, 3)) - 0.5)
        out = torch.zeros(x.shape[0], self.classes, dtype=x.dtype, device=x.device)
        out[:, 0] = z
        return out


def input_gradient_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
    """|d logit_target / d x| summed over channels (a stand-in for the CAM engine)."""
    x = images.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x, allow_unused=True)
    if grad is None:
        return torch.zeros(images.shape[0], *images.shape[-2:])
    return grad.abs().sum(1)


# ---------------------------------------------------------------- intervals


def test_wilson_and_bootstrap_intervals():
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-3)  # z = 1.96: 10 / (10 + z^2)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    v = torch.tensor([1.0, 0.0] * 10)
    a = bootstrap_interval(v, seed=3)
    assert a == bootstrap_interval(v, seed=3)
    assert a[0] < 0.5 < a[1]
    assert bootstrap_interval(torch.ones(7)) == (1.0, 1.0)


# ---------------------------------------------------------------- with masks


def test_background_swap_flags_background_model_only():
    images, masks, labels = objects_data()
    names = ["a", "b", "c"]
    bg = background_swap(BackgroundModel(BG), images, masks, labels, class_names=names, seed=1)
    obj = background_swap(ObjectModel(), images, masks, labels, class_names=names, seed=1)
    assert all(e.flagged for e in bg.values())
    assert not any(e.flagged for e in obj.values())
    for e in bg.values():
        assert e.n == 20 and e.accuracy_with == 1.0 and e.accuracy_without == 0.0
        assert e.drop == 1.0 and e.interval[0] > 0.9 and e.changed == 1.0
        assert e.to_donor == 1.0  # the predictions follow the donor's background
    for e in obj.values():
        assert e.accuracy_with == e.accuracy_without == 1.0 and e.interval == (0.0, 0.0)
    d = bg["a"].as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["basis"] == "mask" and d["intervention"] == "background_swap"
    # the model is put back in its own mode
    m = BackgroundModel(BG).train()
    background_swap(m, images, masks, labels, seed=0)
    assert m.training


def test_background_swap_when_the_test_split_breaks_the_cue():
    # random backgrounds: recall is low before and after, but predictions follow the background
    images, masks, labels = objects_data(90, spurious=False, seed=2)
    res = background_swap(BackgroundModel(BG), images, masks, labels, seed=0)
    assert all(e.flagged for e in res.values())
    assert all(e.changed >= 0.5 for e in res.values())  # 2/3 expected: donors differ


def test_background_blur_keeps_colour():
    images, masks, labels = objects_data()
    res = background_swap(BackgroundModel(BG), images, masks, labels, mode="blur")
    assert not any(e.flagged for e in res.values())
    with pytest.raises(ValueError, match="mode"):
        background_swap(ObjectModel(), images, masks, labels, mode="noise")


def test_background_swap_on_shapes_spurious():
    palette = torch.tensor(BACKGROUND_PALETTE[:4], dtype=torch.float32) / 255
    model = BackgroundModel(palette, bright=180 / 255)
    for shortcut in ("kept", "absent"):
        d = generate_shapes(80, size=32, seed=5, spurious=1.0, split="test", shortcut=shortcut)
        res = background_swap(model, d.float_images(), d.masks, d.labels, class_names=d.class_names)
        assert sorted(n for n, e in res.items() if e.flagged) == sorted(d.class_names), shortcut


# ---------------------------------------------------------------- regions


def test_consistent_region_locates_a_corner():
    m = torch.zeros(32, 32)
    m[0:4, 28:32] = 1.0
    r = consistent_region(m, area=0.05)
    y0, x0, y1, x1 = r.box
    assert (y1 - y0, x1 - x0) == (7, 7) and y0 == 0 and x1 == 32
    assert r.position == "top-right corner" and r.mass_fraction == pytest.approx(1.0)
    maps = m.expand(5, 32, 32) + 0.01 * torch.rand(
        5, 32, 32, generator=torch.Generator().manual_seed(0)
    )
    r = consistent_region(m, maps=maps)
    assert r.peak_in_box == 1.0 and r.location_agreement > 0.9 and r.n == 5
    centre = torch.zeros(30, 30)
    centre[14:16, 14:16] = 1
    assert consistent_region(centre).position == "centre"
    empty = consistent_region(torch.zeros(20, 20), area=0.04)
    assert empty.box == (0, 0, 4, 4) and empty.mass_fraction == pytest.approx(0.04)
    assert json.loads(json.dumps(r.as_dict())) == r.as_dict()


def test_class_mean_maps_weights_images_equally():
    maps = torch.zeros(3, 2, 2)
    maps[0, 0, 0] = 100.0
    maps[1, 1, 1] = 1.0
    maps[2, 0, 1] = 5.0
    means = class_mean_maps(maps, torch.tensor([0, 0, 1]), 3)
    assert torch.allclose(means[0], torch.tensor([[0.5, 0.0], [0.0, 0.5]]))
    assert torch.allclose(means[1], torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    assert means[2].abs().sum() == 0


def test_fill_box_uses_only_outside_pixels():
    x = torch.zeros(2, 3, 12, 12)
    x[:, :, :3, :3] = 1.0  # a bright patch in the corner, the rest 0
    for fill in ("blur", "mean"):
        out = fill_box(x, (0, 0, 3, 3), fill)
        assert out[:, :, :3, :3].abs().max() < 1e-6, fill
        assert torch.equal(out[:, :, 3:], x[:, :, 3:])
    with pytest.raises(ValueError, match="fill"):
        fill_box(x, (0, 0, 3, 3), "noise")


def patch_data(n: int = 80, seed: int = 3):
    d = generate_shapes(n, size=32, seed=seed, patch=1.0, split="test", shortcut="kept")
    return d.float_images(), d.labels, d.class_names, d


def test_region_ablation_and_paste_on_the_patch_model():
    images, labels, names, d = patch_data()
    model = PatchModel()
    sel = labels == 0
    abl = region_ablation(model, images[sel], labels[sel], d.patch_box, class_names=names)
    e = abl["circle"]
    assert e.accuracy_with == 1.0 and e.accuracy_without == 0.0 and e.flagged
    assert e.box == (0, 0, 4, 4) and e.basis == "region"
    paste = region_paste(
        model,
        images[~sel],
        d.patch_box,
        images[sel],
        0,
        control_source_images=images[~sel],
        labels_other=labels[~sel],
        control_labels=labels[~sel],
    )
    assert paste.flip_rate == 1.0 and paste.control_flip_rate == 0.0
    assert paste.net_flip_rate == 1.0 and paste.interval[0] > 0.9


def test_region_shortcuts_flag_exactly_the_patch_class_and_locate_it():
    images, labels, names, d = patch_data()
    model = PatchModel()
    maps = input_gradient_maps(model, images, labels)
    res = region_shortcuts(model, images, labels, maps, names, seed=0)
    assert [n for n, r in res.items() if r.flagged] == ["circle"]
    cue = res["circle"]
    y0, x0, y1, x1 = cue.region.box
    py0, px0, py1, px1 = d.patch_box
    assert y0 <= py0 and x0 <= px0 and y1 >= py1 and x1 >= px1  # the patch is inside the box
    assert cue.region.position == "top-left corner" and cue.region.area_fraction <= 0.1
    assert cue.region.peak_in_box == 1.0 and cue.region.location_agreement > 0.8
    # a bright shape next to the corner can lighten the filled box: at most a few survive
    assert cue.ablation.accuracy_without <= 0.1 and cue.ablation.flagged
    # the other classes: their (empty) maps give the top-left box too, and pasting it into
    # class-0 images removes the patch, which the control shows is not a cue of theirs
    for name in ("square", "triangle", "cross"):
        assert res[name].paste.control_flip_rate == pytest.approx(res[name].paste.flip_rate)
        assert res[name].region.peak_in_box == 0.0  # their maps are all zero: no peak
    d_json = cue.as_dict()
    assert json.loads(json.dumps(d_json)) == d_json
    assert d_json["basis"] == "region" and d_json["box"] == list(cue.region.box)
    assert d_json["flagged"] and d_json["accuracy_with"] == 1.0


def test_region_shortcuts_flag_nothing_for_object_or_background_models():
    images, _, labels = objects_data(90, seed=4)
    for model in (ObjectModel(), BackgroundModel(BG)):
        maps = input_gradient_maps(model, images, labels)
        res = region_shortcuts(model, images, labels, maps, ["a", "b", "c"])
        assert not any(r.flagged for r in res.values()), type(model).__name__


def test_saliency_share_alone_is_only_inspect():
    images, labels, names, _ = patch_data()
    maps = input_gradient_maps(PatchModel(), images, labels)
    scores = shortcut_scores(maps, labels, names)
    assert scores["circle"]["level"] == "inspect"
    assert scores["circle"]["candidate"] is True
    assert all(s["level"] in ("inspect", "none") for s in scores.values())


def test_background_swap_gives_a_background_watermark_to_its_class_only():
    """The watermark sits in the background of class 0's images: swapping backgrounds carries
    it into other classes' images, whose recall then drops. The decision goes to the donor:
    class 0's backgrounds pull other images to it; no other class is flagged."""
    images, labels, names, d = patch_data(n=120)
    effects = background_swap(PatchModel(), images, d.masks, labels, class_names=names, seed=0)
    flagged = sorted(name for name, e in effects.items() if e.flagged)
    assert flagged == ["circle"]
    circle = effects["circle"]
    assert circle.pulls and circle.pull is not None and circle.pull > 0.9
    assert circle.pull_before == 0.0 and circle.pull_n and circle.pull_n > 20
    square = effects["square"]
    assert square.drop > 0.2  # the old receiving-side rule alone would have flagged it
    assert "circle" in square.excluded_donors and not square.pulls
    d2 = square.as_dict()
    assert d2["excluded_donors"] == ["circle"] and len(d2["pull_interval"]) == 2
