"""Trust metrics against reference definitions on fixed small maps.

References, written here from their published definitions (no third-party code copied):

- Quantus ``PointingGame``: hit when *any* pixel where the map equals its maximum is on the mask.
- Quantus ``RelevanceMassAccuracy``: ``sum(a[s]) / sum(a)``.
- RISE ``CausalMetric`` (Petsiuk et al. 2018): ``step`` pixels per iteration, ``n = ceil(HW /
  step)`` iterations, a score before each and after the last, ``auc = (sum(scores) - first/2 -
  last/2) / n`` (the trapezoid rule on ``[0, 1]``); deletion moves pixels to zeros, insertion
  from a blurred image.
- ``scipy.stats.spearmanr`` for Spearman with ties.
- skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``: Gaussian filtering with truncation 3.5 (an 11-tap
  window), the SSIM map cropped by 5 pixels on each side, then averaged. skimage is not installed
  in this environment; its definition is rebuilt from ``scipy.ndimage.gaussian_filter``.

The differences that remain are documented in docs/trust.rst ("Definitions and references").
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from torch import nn

from reporter.metrics.trust import (
    deletion_insertion,
    energy_pointing_game,
    faithfulness_with_references,
    pointing_game,
    rank_correlation,
    ssim,
    zhang_tolerance,
)


@pytest.fixture(scope="module")
def fixed():
    g = torch.Generator().manual_seed(1234)
    maps = torch.rand(16, 12, 12, generator=g)
    maps[::3] = torch.round(maps[::3] * 4) / 4  # plateaus and ties in every third map
    masks = torch.zeros(16, 12, 12, dtype=torch.bool)
    for i in range(16):
        y, x = (i * 5) % 8, (i * 3) % 8
        masks[i, y : y + 4, x : x + 5] = True
    return maps, masks


def quantus_pointing_game(a: np.ndarray, s: np.ndarray) -> bool:
    a, s = a.ravel(), s.ravel().astype(bool)
    return bool(np.any(s[np.flatnonzero(a == a.max())]))


def quantus_relevance_mass(a: np.ndarray, s: np.ndarray) -> float:
    a, s = a.ravel(), s.ravel().astype(bool)
    return float(a[s].sum() / a.sum())


def test_pointing_game_matches_quantus(fixed):
    maps, masks = fixed
    ref = [quantus_pointing_game(maps[i].numpy(), masks[i].numpy()) for i in range(16)]
    assert pointing_game(maps, masks, plateau="any").tolist() == ref
    unique = [int((maps[i] == maps[i].max()).sum()) == 1 for i in range(16)]
    ours = pointing_game(maps, masks).tolist()
    assert [o for o, u in zip(ours, unique, strict=True) if u] == [
        r for r, u in zip(ref, unique, strict=True) if u
    ]


def test_pointing_game_plateau_rules_differ_as_documented():
    sal = torch.ones(1, 4, 4)  # a constant map: every pixel is maximal
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True  # the object is 1/16 of the image
    assert pointing_game(sal, mask, plateau="any").item()  # Quantus: any maximal pixel hits
    assert not pointing_game(sal, mask).item()  # ours: needs half of the maximal pixels


def test_pointing_game_zhang_tolerance():
    assert zhang_tolerance(224, 224) == 15 and zhang_tolerance(32, 32) == 2
    sal = torch.zeros(1, 32, 32)
    sal[0, 10, 12] = 1.0  # the peak is 2 pixels right of the object
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, 8:12, 6:11] = True
    assert not pointing_game(sal, mask).item()
    assert pointing_game(sal, mask, tolerance=zhang_tolerance(32, 32)).item()


def test_energy_matches_relevance_mass_accuracy(fixed):
    maps, masks = fixed
    ref = torch.tensor(
        [quantus_relevance_mass(maps[i].numpy(), masks[i].numpy()) for i in range(16)]
    )
    assert torch.allclose(energy_pointing_game(maps, masks), ref, atol=1e-6)
    # raw maps, not min-max normalised: normalising moves mass (the documented difference)
    lo = maps.flatten(1).min(1).values[:, None, None]
    hi = maps.flatten(1).max(1).values[:, None, None]
    normalised = energy_pointing_game((maps - lo) / (hi - lo), masks)
    assert (normalised - ref).abs().max() > 1e-3
    assert torch.allclose(energy_pointing_game(3.0 * maps, masks), ref, atol=1e-6)


class Diagonal(nn.Module):
    """Two logits: ``[x00 + x11, 0]`` on a 1-channel 2 x 2 image (hand-computable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x[:, 0, 0, 0] + x[:, 0, 1, 1]
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def test_deletion_hand_computed_like_rise():
    # image [[1, .5], [.5, 1]]; map order (0,0), (1,1), (1,0), (0,1); zero baseline, 4 steps
    # (one pixel per step, RISE's step = 1). p0 = sigmoid(x00 + x11):
    #   k=0: sigmoid(2) = .880797, k=1: sigmoid(1) = .731059, k=2..4: sigmoid(0) = .5
    # RISE's auc = (sum - first/2 - last/2) / (n - 1) = (3.111856 - .440399 - .25) / 4 = .605364
    image = torch.tensor([[[[1.0, 0.5], [0.5, 1.0]]]])
    sal = torch.tensor([[[4.0, 1.0], [2.0, 3.0]]])
    res = deletion_insertion(Diagonal(), image, sal, 0, steps=4, baseline="zero")
    s = [1 / (1 + math.exp(-v)) for v in (2, 1, 0, 0, 0)]
    assert res.deletion[0].tolist() == pytest.approx(s, abs=1e-6)
    assert float(res.deletion_auc[0]) == pytest.approx(0.605364, abs=1e-6)
    # insertion from zeros: .5, .731059 (x00 back), .880797, .880797, .880797
    # auc = (.5/2 + .731059 + .880797 * 2 + .880797/2) / 4 = 3.183051 / 4 = .795763
    assert float(res.insertion_auc[0]) == pytest.approx(0.795763, abs=1e-6)


def rise_causal_metric(model, image, sal, substrate, mode: str, step: int) -> np.ndarray:
    """RISE's deletion / insertion loop on one image (from the paper's definition)."""
    _, c, h, w = image.shape
    hw = h * w
    n = (hw + step - 1) // step
    order = np.argsort(-sal.reshape(-1).numpy(), kind="stable")
    start = (image if mode == "del" else substrate).clone().reshape(1, c, hw)
    finish = (substrate if mode == "del" else image).reshape(1, c, hw)
    scores = []
    for i in range(n + 1):
        with torch.no_grad():
            p = torch.softmax(model(start.reshape(1, c, h, w)), dim=1)[0, 0]
        scores.append(float(p))
        if i < n:
            idx = torch.as_tensor(order[step * i : step * (i + 1)].copy())
            start[0, :, idx] = finish[0, :, idx]
    return np.asarray(scores)


def rise_auc(arr: np.ndarray) -> float:
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def test_deletion_insertion_match_rise_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3))
    images = torch.rand(3, 3, 8, 8)
    sal = torch.rand(3, 8, 8)  # no ties
    blurred = torch.rand(3, 3, 8, 8)  # any insertion substrate, passed as a tensor to both
    ours_del = deletion_insertion(model, images, sal, 0, steps=16, baseline="zero")
    ours_ins = deletion_insertion(model, images, sal, 0, steps=16, baseline=blurred)
    for i in range(3):
        ref_del = rise_causal_metric(
            model, images[i : i + 1], sal[i], torch.zeros(1, 3, 8, 8), "del", step=4
        )
        ref_ins = rise_causal_metric(
            model, images[i : i + 1], sal[i], blurred[i : i + 1], "ins", step=4
        )
        assert ours_del.deletion[i].numpy() == pytest.approx(ref_del, abs=1e-6)
        assert ours_ins.insertion[i].numpy() == pytest.approx(ref_ins, abs=1e-6)
        assert float(ours_del.deletion_auc[i]) == pytest.approx(rise_auc(ref_del), abs=1e-6)
        assert float(ours_ins.insertion_auc[i]) == pytest.approx(rise_auc(ref_ins), abs=1e-6)


def test_spearman_matches_scipy(fixed):
    maps, _ = fixed
    other = maps.flip(0) + 0.1 * maps
    ours = rank_correlation(maps, other)
    ref = [stats.spearmanr(maps[i].ravel(), other[i].ravel()).statistic for i in range(16)]
    assert ours.tolist() == pytest.approx(ref, abs=1e-6)


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """skimage's Gaussian SSIM (sigma 1.5, population covariance, data range 1)."""
    a, b = a.astype(np.float64), b.astype(np.float64)

    def filt(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=1.5, truncate=3.5)

    ux, uy = filt(a), filt(b)
    vx, vy, vxy = filt(a * a) - ux * ux, filt(b * b) - uy * uy, filt(a * b) - ux * uy
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_ssim_matches_skimage_definition():
    g = torch.Generator().manual_seed(7)
    a = torch.rand(4, 24, 20, generator=g)
    b = (a + 0.3 * torch.rand(4, 24, 20, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    ref = [skimage_ssim(a[i].numpy(), b[i].numpy()) for i in range(4)]
    assert ours.tolist() == pytest.approx(ref, abs=1e-5)


# ---------------------------------------------------------------- ties and references


class TopHalf(nn.Module):
    """Logit 0 = 8 * (mean of the top half of the image); logit 1 = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 8 * x[:, :, : x.shape[2] // 2].mean(dim=(1, 2, 3))
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def test_constant_map_is_neutral_with_random_ties():
    # A constant map says nothing. Row-major tie order deletes the top rows first, which is what
    # this model reads, so the AUC depends on the image's orientation; random tie orders do not.
    images = torch.ones(1, 1, 16, 16)
    flipped_model = nn.Sequential()  # identity; the flip is applied to the model's view below

    class BottomHalf(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return TopHalf()(flipped_model(x.flip(2)))

    const = torch.ones(1, 16, 16)
    kw = {"steps": 16, "baseline": "zero"}
    top = deletion_insertion(TopHalf(), images, const, 0, **kw).deletion_auc
    bottom = deletion_insertion(BottomHalf(), images, const, 0, **kw).deletion_auc
    assert float(bottom - top) > 0.15  # row-major: the tie order alone moves the AUC
    kw.update(ties="random", tie_orders=16, seed=0)
    top = deletion_insertion(TopHalf(), images, const, 0, **kw).deletion_auc
    bottom = deletion_insertion(BottomHalf(), images, const, 0, **kw).deletion_auc
    assert float((bottom - top).abs()) < 0.03
    # random ties never reorder distinct values
    ranked = torch.arange(256.0).view(1, 16, 16)
    a = deletion_insertion(TopHalf(), images, ranked, 0, steps=16, baseline="zero")
    b = deletion_insertion(
        TopHalf(), images, ranked, 0, steps=16, baseline="zero", ties="random", seed=3
    )
    assert torch.allclose(a.deletion, b.deletion)


def test_faithfulness_with_references_labels_and_random_reference():
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.5
    good = torch.zeros(4, 16, 16)
    good[:, :8] = 1.0 + torch.rand(4, 8, 16, generator=torch.Generator().manual_seed(1))
    res = faithfulness_with_references(TopHalf(), images, good, 0, steps=8, random_maps=2)
    assert set(res["baselines"]) == {"blur", "zero"} and res["ties"] == "random"
    zero = res["baselines"]["zero"]
    assert zero["baseline"] == "zero"
    assert zero["deletion_gain"] > 0 and zero["insertion_gain"] > 0
    assert zero["deletion_auc"] < zero["random_deletion_auc"]
    again = faithfulness_with_references(TopHalf(), images, good, 0, steps=8, random_maps=2)
    assert again == res  # seeded
    none = faithfulness_with_references(
        TopHalf(), images, good, 0, steps=4, random_maps=0, baselines=("mean",)
    )
    assert none["baselines"]["mean"]["random_deletion_auc"] is None
