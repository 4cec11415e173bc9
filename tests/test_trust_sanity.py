"""Model-parameter randomization: correlations, SSIM, copies and the verdict."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from reporter.metrics.trust import (
    SPEARMAN_THRESHOLD,
    parameter_layers,
    randomization_scores,
    randomized_copies,
    rank_correlation,
    ranks,
    sanity_verdict,
    ssim,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_spearman_identical_and_reversed(gen):
    a = torch.rand(5, 8, 8, generator=gen)
    assert torch.allclose(rank_correlation(a, a), torch.ones(5))
    assert torch.allclose(rank_correlation(a, -a), -torch.ones(5))
    # Spearman is invariant to monotone transforms.
    assert torch.allclose(rank_correlation(a, a**3 + 2), torch.ones(5))


def test_spearman_matches_scipy_with_ties(gen):
    a = torch.randint(0, 4, (3, 50), generator=gen).float()  # many ties
    b = torch.randint(0, 6, (3, 50), generator=gen).float()
    ours = rank_correlation(a, b)
    for i in range(3):
        ref = spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert float(ours[i]) == pytest.approx(ref, abs=1e-5)


def test_ranks_average_ties():
    assert ranks(torch.tensor([[10.0, 20.0, 20.0, 5.0]])).tolist() == [[1.0, 2.5, 2.5, 0.0]]


def test_spearman_constant_map_is_zero(gen):
    a = torch.rand(2, 4, 4, generator=gen)
    assert rank_correlation(a, torch.zeros(2, 4, 4)).tolist() == [0.0, 0.0]


def test_ssim_identical_and_different(gen):
    a = torch.rand(4, 32, 32, generator=gen)
    assert torch.allclose(ssim(a, a), torch.ones(4), atol=1e-5)
    b = torch.rand(4, 32, 32, generator=gen)
    assert float(ssim(a, b).mean()) < 0.1
    small = torch.rand(2, 5, 5, generator=gen)  # smaller than the window
    assert torch.allclose(ssim(small, small), torch.ones(2), atol=1e-5)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():  # as if trained: BatchNorm's affine parameters away from 1 and 0
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net


def test_randomized_copies_leave_model_alone():
    model = tiny_net()
    model[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    names = []
    for name, copy in randomized_copies(model, seed=1):
        names.append(name)
        assert copy is not model
        changed = dict(copy.named_modules())[name].weight
        original = dict(model.named_modules())[name].weight
        assert not torch.equal(changed, original)
    assert names == ["7", "3", "1", "0"] == parameter_layers(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_cascading_accumulates_and_keeps_buffers():
    model = tiny_net()
    model[1].running_mean.fill_(0.5)
    steps = [
        (n, {k: v.clone() for k, v in m.state_dict().items()})
        for n, m in randomized_copies(model, seed=1)
    ]
    last = steps[-1][1]
    for key, value in model.state_dict().items():
        if key.endswith(("weight", "bias")):
            assert not torch.equal(last[key], value), key
    assert torch.equal(last["1.running_mean"], model[1].running_mean)
    # Independent order randomizes one layer at a time.
    for name, copy in randomized_copies(model, "independent", seed=1):
        for key, value in model.state_dict().items():
            same = torch.equal(copy.state_dict()[key], value)
            assert same == (not key.startswith(f"{name}.") or "running" in key or "num" in key)


def test_randomization_is_seeded():
    model = tiny_net()
    a = [m.state_dict()["0.weight"].clone() for _, m in randomized_copies(model, seed=3)]
    b = [m.state_dict()["0.weight"].clone() for _, m in randomized_copies(model, seed=3)]
    assert torch.equal(a[-1], b[-1])


def test_bad_order_and_layer():
    with pytest.raises(ValueError):
        next(randomized_copies(tiny_net(), "sideways"))
    with pytest.raises(ValueError):
        next(randomized_copies(tiny_net(), layers=["nope"]))


def _activation_map(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A model-dependent map: the summed activation of the last conv block, min-max normalised."""
    with torch.no_grad():
        a = model[:5](images).sum(1)
    a = a - a.flatten(1).min(1).values[:, None, None]
    return a / a.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]


def _image_map(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A model-independent 'explanation' (an edge detector in disguise): the image itself."""
    return images[:, 0]


def test_verdict_on_models():
    model = tiny_net()
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    meaningful = randomization_scores(model, images, _activation_map, seed=0)
    final = list(meaningful.values())[-1]
    assert sanity_verdict(final["spearman"], final["ssim"]).passed
    copycat = randomization_scores(model, images, _image_map, seed=0)
    final = list(copycat.values())[-1]
    verdict = sanity_verdict(final["spearman"], final["ssim"])
    assert not verdict.passed
    assert verdict.spearman == pytest.approx(1.0)
    assert set(verdict.as_dict()) == {
        "spearman",
        "ssim",
        "passed",
        "spearman_threshold",
        "ssim_threshold",
        "n",
    }


def test_verdict_on_hand_made_maps(gen):
    maps = torch.rand(8, 16, 16, generator=gen)
    noisy = (maps + 0.05 * torch.rand(8, 16, 16, generator=gen)).clamp(0, 1)
    inverted = 1 - maps
    unrelated = torch.rand(8, 16, 16, generator=gen)
    assert not sanity_verdict(rank_correlation(maps, noisy), ssim(maps, noisy)).passed
    assert not sanity_verdict(rank_correlation(maps, inverted), ssim(maps, inverted)).passed
    verdict = sanity_verdict(rank_correlation(maps, unrelated), ssim(maps, unrelated))
    assert verdict.passed and verdict.spearman < SPEARMAN_THRESHOLD
    # Structurally identical maps fail on SSIM even if the threshold on rank is relaxed.
    assert not sanity_verdict(torch.zeros(8), ssim(maps, maps), threshold=1.0).passed
