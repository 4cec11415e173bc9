"""Graded randomization test: several seeds, the random-vs-random floor, constant maps, status.

The model is tiny and hand-set; the "methods" are plain functions of the model and the images,
so each one's dependence on the weights is known exactly:

- ``weights``: the map *is* a learned weight matrix (a smooth bump): randomized, it becomes
  noise -> passed.
- ``edges``: the image's gradient magnitude, no weights at all -> failed, floor 1.
- ``clamped``: the weight matrix clamped at 0.5: trained it is a bump, randomized (all weights
  within +-0.35) it is constant -> every randomized map constant -> inconclusive.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from reporter.metrics.trust.sanity import (
    BATCHNORM_NOTE,
    SANITY_MEANINGS,
    grade_randomization,
    graded_randomization,
    randomized_copies,
)

H = 8


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.spatial = nn.Linear(H, H, bias=False)
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
        bump = 0.5 + 1.5 * torch.exp(-((yy - 2.0) ** 2 + (xx - 5.0) ** 2) / 6.0)
        with torch.no_grad():
            self.spatial.weight.copy_(bump)
            self.bn.running_mean.fill_(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def explain(model: Tiny, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    b = images.shape[0]
    w = model.spatial.weight.detach()
    x = images[:, 0]
    gy = torch.zeros_like(x)
    gy[:, 1:] = x[:, 1:] - x[:, :-1]
    return {
        "weights": w.abs().expand(b, H, H),
        "edges": gy.abs() + 1e-3 * x,
        "clamped": w.clamp(min=0.5).expand(b, H, H),
    }


@pytest.fixture(scope="module")
def graded():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, H, H, generator=g)
    targets = torch.zeros(12, dtype=torch.long)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = graded_randomization(model, images, targets, explain, seeds=(0, 1, 2))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's model untouched
    return out


def test_status_per_method(graded):
    assert graded["weights"].status == "passed"
    assert graded["edges"].status == "failed"
    assert graded["clamped"].status == "inconclusive"
    for r in graded.values():
        assert r.meaning == SANITY_MEANINGS[r.status]
    assert "not what the model used for its class" in graded["edges"].meaning


def test_numbers_floor_and_constants(graded):
    w, e, c = graded["weights"], graded["edges"], graded["clamped"]
    assert w.interval[1] < 0.5 and w.spearman < 0.5
    assert e.spearman == pytest.approx(1.0) and e.interval[0] == pytest.approx(1.0)
    assert e.floor_spearman == pytest.approx(1.0)  # two random networks: the same edge map
    assert w.floor_spearman is not None and w.floor_spearman < 0.5
    assert c.n_constant == c.n_maps == 36 and w.n_constant == 0
    assert w.n_seeds == 3 and w.n_images == 12 and len(w.per_seed) == 3
    assert list(w.cascade) == ["spatial", "bn", "conv"]  # output first (reverse registration)
    assert w.cascade["spatial"] < 0.5 and e.cascade["conv"] == pytest.approx(1.0)
    assert w.note == BATCHNORM_NOTE
    d = w.as_dict()
    assert json.loads(json.dumps(d)) == d
    d = c.as_dict()
    assert d["spearman"] is None or isinstance(d["spearman"], float)
    json.dumps(d)


def test_independent_order_and_cascade_keys():
    images = torch.rand(6, 1, H, H, generator=torch.Generator().manual_seed(1))
    targets = torch.zeros(6, dtype=torch.long)
    out = graded_randomization(
        Tiny(), images, targets, explain, seeds=(0, 1, 2), order="independent"
    )
    assert out["weights"].status == "passed" and out["edges"].status == "failed"
    assert set(out["weights"].cascade) == {"conv", "bn", "spatial"}
    assert out["weights"].order == "independent"


def test_batchnorm_statistics_are_kept():
    model = Tiny()
    for _, randomized in randomized_copies(model, seed=3):
        assert torch.equal(randomized.bn.running_mean, model.bn.running_mean)


def test_grade_rule_on_numbers():
    const = torch.zeros(3, 20, dtype=torch.bool)
    low = torch.full((3, 20), 0.1)
    high = torch.full((3, 20), 0.9)
    sim_low = torch.full((3, 20), 0.2)
    assert grade_randomization(low, sim_low, const)["status"] == "passed"
    assert grade_randomization(high, sim_low, const)["status"] == "failed"
    # SSIM alone can fail a method
    assert grade_randomization(low, torch.full((3, 20), 0.95), const)["status"] == "failed"
    # straddling the threshold: half the images similar, half not
    mixed = torch.cat([low[:, :10], high[:, 10:]], dim=1)
    r = grade_randomization(mixed, sim_low, const)
    assert r["status"] == "inconclusive" and r["interval"][0] < 0.5 < r["interval"][1]
    # one seed out of three above the threshold: the verdict flips with the seed
    seedy = torch.stack([low[0], low[0], torch.full((20,), 0.6)])
    r = grade_randomization(seedy, sim_low, const)
    assert r["status"] == "inconclusive" and r["per_seed"][2] == pytest.approx(0.6)
    # mostly constant randomized maps: inconclusive, whatever the rest says
    mostly = torch.ones(3, 20, dtype=torch.bool)
    mostly[:, :5] = False
    assert grade_randomization(low, sim_low, mostly)["status"] == "inconclusive"
