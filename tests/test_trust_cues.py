"""Hidden-cue robustness: the intervention pipeline flags exactly the cue class, names where
its cue is, and flags nothing on a clean model; two different cues (a magenta square in the
top-left corner, a jittered green "x" glyph near the bottom-right corner), with and without
masks.

The models are hand-set (no training, so the tests are fast and exact about what the model
reads): a *cue reader* predicts the cue class whenever the cue's colour appears anywhere, and
otherwise a class from the mean colour of the object's pixels (bright: no background pixel
is); the *clean* model is that object reader alone: it provably ignores the background.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reporter.data.shapes import generate_shapes
from reporter.metrics.trust import (
    background_swap,
    pasted_images,
    pixel_contrast_maps,
    region_paste,
    search_region_cues,
    swapped_images,
)

MAGENTA = (255, 0, 255)
GREEN = (0, 255, 0)
X_GLYPH = np.eye(5, dtype=bool) | np.eye(5, dtype=bool)[::-1]  # a 5 x 5 "x": 9 pixels


def add_mark(
    data, cls: int, glyph: np.ndarray, colour, corner: tuple[int, int], jitter: int, seed=0
):
    """Draw ``glyph`` in ``colour`` on every image of class ``cls`` at ``corner`` (top-left of
    the glyph, pixels) moved by up to ``jitter`` px; the mask is false under the mark."""
    rng = np.random.default_rng(seed)
    images = data.images.numpy().copy()
    masks = data.masks.numpy().copy()
    gh, gw = glyph.shape
    for i in np.flatnonzero(data.labels.numpy() == cls):
        dy, dx = rng.integers(-jitter, jitter + 1, size=2) if jitter else (0, 0)
        y, x = corner[0] + dy, corner[1] + dx
        region = images[i, y : y + gh, x : x + gw]
        region[glyph] = colour
        masks[i, y : y + gh, x : x + gw][glyph] = False
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(masks)


class CueReader(nn.Module):
    """Logits: a large bonus for ``cue_class`` where some pixel has the cue's colour (a 1x1
    colour detector, global max pool), plus a linear read of the object's mean colour."""

    def __init__(self, colour, cue_class: int, *, with_cue: bool = True) -> None:
        super().__init__()
        c = torch.tensor(colour, dtype=torch.float32) / 255
        # +1 where the channel is on in the cue colour, -1 where off; fires only near the colour
        self.detect = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.detect.weight.copy_((2 * c - 1).view(1, 3, 1, 1))
            self.detect.bias.fill_(-(float((c > 0.5).sum())) + 0.5)
        self.mean = nn.Linear(3, 4)
        with torch.no_grad():
            self.mean.weight.copy_(torch.tensor([[4.0, 0, 0], [0, 4, 0], [0, 0, 4], [2, 2, 2]]))
            self.mean.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -0.4]))
        self.cue_class = cue_class
        self.with_cue = with_cue

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the mean colour of the object's pixels: the shapes are bright, backgrounds never are
        bright = (x.sum(1, keepdim=True) > 1.5).float()
        colour = (x * bright).sum((2, 3)) / bright.sum((2, 3)).clamp(min=1)
        logits = self.mean(colour)
        if self.with_cue:
            fire = torch.relu(self.detect(x)).amax((1, 2, 3)) * 20
            logits = logits + nn.functional.one_hot(torch.tensor(self.cue_class), 4) * fire[:, None]
        return logits

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """The detector's map: where the cue is (what a shallow layer's CAM would show)."""
        return torch.relu(self.detect(x))[:, 0]


CUES = {
    # name: (class, glyph, colour, corner, jitter, expected position)
    "corner-patch": (0, np.ones((4, 4), dtype=bool), MAGENTA, (0, 0), 0, "top-left corner"),
    "x-glyph": (2, X_GLYPH, GREEN, (25, 25), 1, "bottom-right corner"),
}


def cue_data(name: str, n: int = 96, seed: int = 3):
    cls, glyph, colour, corner, jitter, position = CUES[name]
    data = generate_shapes(n, size=32, seed=seed, split="test")
    images, masks = add_mark(data, cls, glyph, colour, corner, jitter, seed=seed)
    return images, masks, data.labels, data.class_names, CueReader(colour, cls), position


@pytest.mark.parametrize("name", list(CUES))
def test_search_finds_the_cue_an_object_map_misses(name):
    images, masks, labels, names, model, position = cue_data(name)
    cls = CUES[name][0]
    object_maps = masks.float()  # a map that follows the object, like a deep layer's Grad-CAM
    # saliency alone (object-bound) misses the cue ...
    missed = search_region_cues(
        model, images, labels, {"deep": object_maps}, names, pixel_contrast=False
    )
    assert not any(s.flagged for s in missed.values())
    # ... the pixel-contrast candidate finds it; the intervention picks it over the object map
    found = search_region_cues(model, images, labels, {"deep": object_maps}, names)
    assert [c for c, s in found.items() if s.flagged] == [names[cls]]
    cue = found[names[cls]]
    assert cue.source.startswith("pixel-contrast") and cue.cue.region.position == position
    assert cue.cue.paste.flip_rate == 1.0 and cue.cue.paste.control_flip_rate == 0.0
    # a shallow map that shows the cue finds it on its own too
    shallow = search_region_cues(
        model,
        images,
        labels,
        {"deep": object_maps, "shallow": model.activation(images)},
        names,
        pixel_contrast=False,
    )
    assert [c for c, s in shallow.items() if s.flagged] == [names[cls]]
    assert shallow[names[cls]].source == "shallow"
    box = shallow[names[cls]].cue.region.box
    mark_y, mark_x = CUES[name][3]
    assert box[0] <= mark_y + 2 < box[2] and box[1] <= mark_x + 2 < box[3]  # the mark's centre


@pytest.mark.parametrize("name", list(CUES))
def test_clean_model_nothing_flagged(name):
    images, masks, labels, names, _, _ = cue_data(name)
    clean = CueReader(CUES[name][2], CUES[name][0], with_cue=False)
    found = search_region_cues(
        clean, images, labels, {"deep": masks.float(), "act": images.mean(1)}, names
    )
    assert not any(s.flagged for s in found.values()), {c: s.as_dict() for c, s in found.items()}
    effects = background_swap(clean, images, masks, labels, class_names=names)
    assert not any(e.flagged for e in effects.values())


@pytest.mark.parametrize("name", list(CUES))
def test_background_swap_flags_the_cue_class_only(name):
    images, masks, labels, names, model, _ = cue_data(name)
    effects = background_swap(model, images, masks, labels, class_names=names)
    assert [c for c, e in effects.items() if e.flagged] == [names[CUES[name][0]]]
    assert effects[names[CUES[name][0]]].pulls


def test_pixel_contrast_peaks_on_a_fixed_mark():
    images, _, labels, _, _, _ = cue_data("corner-patch")
    contrast = pixel_contrast_maps(images, labels, 4)
    assert contrast.shape == (4, 32, 32)
    peak = int(contrast[0].argmax())
    assert divmod(peak, 32)[0] < 4 and divmod(peak, 32)[1] < 4
    assert float(contrast[0, :4, :4].min()) > float(contrast[0, 8:, 8:].max())


def test_example_images_reproduce_the_interventions():
    images, masks, labels, _, model, _ = cue_data("corner-patch", n=40)
    edited, donors = swapped_images(images, masks, labels, seed=5)
    assert donors is not None and bool((donors != labels).all())
    assert torch.equal(
        edited[masks[:, None].expand_as(edited)], images[masks[:, None].expand_as(images)]
    )
    sel = labels == 0
    box = (0, 0, 4, 4)
    effect = region_paste(model, images[~sel], box, images[sel], 0, seed=7)
    shown = pasted_images(images[~sel], box, images[sel], seed=7)
    with torch.no_grad():
        after = model(shown).argmax(1)
    assert float((after == 0).float().mean()) == effect.rate_after


@pytest.mark.parametrize("name", list(CUES))
def test_stage_shortcut_examples_are_the_images_the_cue_turned_wrong(name):
    from reporter.audit.trust import SHORTCUT_EXAMPLES, _shortcut_examples
    from reporter.config import AuditConfig

    images, masks, labels, names, model, _ = cue_data(name, n=64)
    cls = names[CUES[name][0]]
    effects = background_swap(model, images, masks, labels, class_names=names)
    search = search_region_cues(model, images, labels, {}, names)
    out = {
        c: {
            "flagged": effects[c].flagged or search[c].flagged,
            "flagged_by": [
                k
                for k, v in (
                    ("background-swap", effects[c].flagged),
                    ("region-paste", search[c].flagged),
                )
                if v
            ],
        }
        for c in names
    }
    keep = torch.ones(len(labels), dtype=torch.bool)
    records, pictures = _shortcut_examples(
        model, images, images, labels, masks, keep, names, out, search, 0, 64, AuditConfig().trust
    )
    assert 0 < len(records) <= SHORTCUT_EXAMPLES and len(records) == len(pictures)
    assert {r["class"] for r in records} == {cls}
    assert {r["kind"] for r in records} >= {"background-swap", "region-paste"}
    with torch.no_grad():
        after = model(torch.stack(pictures)).argmax(1)
    for r, a in zip(records, after.tolist(), strict=True):
        assert r["pred_after"] == names[a] and r["pred_before"] != r["pred_after"]
        if r["kind"] == "region-paste":
            assert r["pred_after"] == cls and r["label"] != cls
        if r["kind"] == "region-ablate":
            assert r["label"] == cls and r["pred_before"] == cls
