"""Deletion / insertion and average drop / increase on a model that reads one pixel."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reporter.metrics.trust import average_drop_increase, baseline_images, deletion_insertion


class OnePixel(nn.Module):
    """Logits ``[10 * x[0, r, c], 0]``: class 0 is certain when pixel (r, c) is bright."""

    def __init__(self, r: int = 3, c: int = 5) -> None:
        super().__init__()
        self.r, self.c = r, c
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.scale * x[:, 0, self.r, self.c]
        return torch.stack([v, torch.zeros_like(v)], dim=1)


def _setup(b: int = 3, size: int = 8):
    images = torch.zeros(b, 1, size, size)
    images[:, 0, 3, 5] = 1.0
    good = torch.rand(b, size, size, generator=torch.Generator().manual_seed(0)) * 0.5
    good[:, 3, 5] = 1.0  # the read pixel is the most salient
    bad = good.clone()
    bad[:, 3, 5] = -1.0  # the read pixel is the least salient
    return images, good, bad


P1 = 1 / (1 + math.exp(-10))  # softmax probability of class 0 with the pixel on


def test_deletion_drops_at_once_and_insertion_rises_at_once():
    images, good, _ = _setup()
    res = deletion_insertion(OnePixel(), images, good, 0, steps=8, baseline="zero")
    assert res.deletion.shape == (3, 9) and res.insertion.shape == (3, 9)
    assert torch.allclose(res.deletion[:, 0], torch.full((3,), P1))
    assert torch.allclose(res.deletion[:, 1:], torch.full((3, 8), 0.5))
    assert torch.allclose(res.insertion[:, 0], torch.full((3,), 0.5))
    assert torch.allclose(res.insertion[:, 1:], torch.full((3, 8), P1))
    assert torch.allclose(res.deletion_auc, torch.full((3,), (P1 + 0.5) / 16 + 0.5 * 7 / 8))
    summary = res.summary()
    assert len(summary["deletion_curve"]) == 9
    assert summary["insertion_auc"] > summary["deletion_auc"]


def test_wrong_map_is_unfaithful():
    images, good, bad = _setup()
    good_res = deletion_insertion(OnePixel(), images, good, 0, steps=8, baseline="zero")
    bad_res = deletion_insertion(OnePixel(), images, bad, 0, steps=8, baseline="zero")
    # The pixel goes last: the score survives every step but the final one.
    assert torch.allclose(bad_res.deletion[:, :-1], torch.full((3, 8), P1))
    assert torch.allclose(bad_res.deletion[:, -1], torch.full((3,), 0.5))
    assert (bad_res.deletion_auc > good_res.deletion_auc).all()
    assert (bad_res.insertion_auc < good_res.insertion_auc).all()


def test_batch_size_and_resolution_do_not_matter():
    images, good, _ = _setup(b=5)
    a = deletion_insertion(OnePixel(), images, good, 0, steps=4, baseline="blur", batch_size=3)
    b = deletion_insertion(
        OnePixel(),
        images,
        good,
        torch.zeros(5, dtype=torch.long),
        steps=4,
        baseline="blur",
        batch_size=1000,
    )
    assert torch.allclose(a.deletion, b.deletion) and torch.allclose(a.insertion, b.insertion)
    # A low-resolution map is resized to the image size.
    low = torch.zeros(5, 4, 4)
    low[:, 1, 2] = 1.0
    c = deletion_insertion(OnePixel(), images, low, 0, steps=4, baseline="zero")
    assert (c.deletion[:, 1] < 0.6).all()


def test_model_mode_restored_and_no_grad():
    model = OnePixel().train()
    images, good, _ = _setup()
    res = deletion_insertion(model, images, good, 0, steps=2)
    assert model.training and model.scale.grad is None
    assert not res.deletion.requires_grad


def test_baselines():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    blur = baseline_images(images, "blur")
    assert blur.shape == images.shape and blur.std() < images.std()
    assert torch.allclose(blur.mean((2, 3)), images.mean((2, 3)), atol=0.02)
    mean = baseline_images(images, "mean")
    assert torch.allclose(mean[:, :, 0, 0], images.mean((2, 3)))
    assert torch.equal(baseline_images(images, "zero"), torch.zeros_like(images))
    assert torch.equal(baseline_images(images, torch.tensor(0.5)), torch.full_like(images, 0.5))
    with pytest.raises(ValueError):
        baseline_images(images, "noise")


def test_bad_inputs():
    images, good, _ = _setup()
    with pytest.raises(ValueError):
        deletion_insertion(OnePixel(), images, good[:2], 0)
    with pytest.raises(ValueError):
        deletion_insertion(OnePixel(), images, good, torch.zeros(2, dtype=torch.long))


def test_average_drop_increase():
    images, _, _ = _setup()
    on = torch.zeros(3, 8, 8)
    on[:, 3, 5] = 1.0
    kept = average_drop_increase(OnePixel(), images, on, 0)
    assert torch.allclose(kept.drop, torch.zeros(3)) and not kept.increase.any()
    assert kept.average_drop == 0.0 and kept.increase_rate == 0.0
    lost = average_drop_increase(OnePixel(), images, torch.zeros(3, 8, 8), 0, batch_size=2)
    assert lost.average_drop == pytest.approx((P1 - 0.5) / P1, abs=1e-6)

    # A model that also dislikes bright surroundings: masking them out raises the score.
    def contrast(x: torch.Tensor) -> torch.Tensor:
        return OnePixel()(x) - torch.stack([x.mean((1, 2, 3)), torch.zeros(len(x))], dim=1)

    grey = images.clone()
    grey[grey == 0] = 0.5
    more = average_drop_increase(contrast, grey, on, 0)
    assert more.increase_rate == 1.0 and more.average_drop == 0.0
    assert (more.explanation_score > more.score).all()
    assert set(more.summary()) == {"average_drop", "increase_rate"}


def test_identical_inputs_are_evaluated_once_with_the_same_curves():
    """A map without ties gives the same images in every tie order, and the curves' end points
    are the intact image and the baseline: only the distinct images go through the model."""
    import torch as _t

    from reporter.metrics.trust import deletion_insertion as _di

    seen = []

    def model(x):
        seen.append(x.shape[0])
        return _t.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)

    gen = _t.Generator().manual_seed(0)
    images = _t.rand(3, 3, 8, 8, generator=gen)
    distinct = _t.rand(3, 8, 8, generator=gen)  # no ties
    target = _t.zeros(3, dtype=_t.long)
    one = _di(model, images, distinct, target, steps=6, tie_orders=1, baseline="zero")
    seen.clear()
    four = _di(
        model, images, distinct, target, steps=6, tie_orders=4, ties="random", baseline="zero"
    )
    assert sum(seen) == 3 * (2 * 7 - 2)  # one order's rows, the two end points shared
    assert _t.allclose(one.deletion_auc, four.deletion_auc)
    assert _t.allclose(one.insertion_auc, four.insertion_auc)
    # a map of ties: orders differ where a tie straddles a step, and are still averaged
    seen.clear()
    flat = _t.zeros(3, 8, 8)
    _di(model, images, flat, target, steps=6, tie_orders=4, ties="random", baseline="zero")
    assert 3 * (2 * 7 - 2) < sum(seen) <= 3 * 4 * 2 * 7
