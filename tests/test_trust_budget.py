"""The trust stage's time budget: the cost model counts the passes the checks really make, the
plan scales the image counts by one factor down to their floors, and an audit with a tiny
budget runs the floors, says so in audit.json, a finding and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from reporter.audit import trust as stage
from reporter.audit.findings import key_findings
from reporter.audit.trust_budget import (
    FLOORS,
    SANITY_STEP_COST,
    CheckCost,
    check_costs,
    plan_trust,
)
from reporter.audit.trust_findings import budget_findings
from reporter.cli import cli
from reporter.metrics import trust as T
from tests.conftest import make_image_folder


class Counting(nn.Module):
    """A small CNN that counts the images it is given."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, classes),
        )
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.net(x)


def _costs(**kw) -> dict[str, CheckCost]:
    args = dict(
        methods=3,
        sanity_seeds=3,
        cascade_steps=8,
        baselines=2,
        tie_orders=1,
        random_maps=1,
        curve_steps=12,
        region_passes_per_image=10.0,
    )
    args.update(kw)
    return check_costs(**args)


def test_costs_per_image():
    costs = _costs()
    assert costs["sanity"] == CheckCost(explain=25 * SANITY_STEP_COST, forward=0)
    # 2 baselines x (3 maps + 1 random) x 24 distinct images + 6 (average drop) + 3 (removed)
    assert costs["faithfulness"] == CheckCost(explain=0, forward=2 * 4 * 24 + 6 + 3)
    assert costs["region"] == CheckCost(explain=0, forward=10.0)
    assert costs["faithfulness"].seconds(10, explain_s=1.0, forward_s=0.01) == pytest.approx(
        10 * 201 * 0.01
    )


def test_faithfulness_cost_is_the_passes_the_stage_makes():
    model = Counting()
    images = torch.rand(5, 3, 12, 12)
    targets = torch.tensor([0, 1, 2, 0, 1])
    maps = {m: torch.rand(5, 12, 12) for m in ("a", "b")}
    stage._faithfulness(model, images, maps, targets, ["a", "b"], batch=64, seed=0)
    T.fully_removed(model, images, targets, targets, baselines=stage.FAITHFULNESS_BASELINES)
    cost = _costs(methods=2, baselines=len(stage.FAITHFULNESS_BASELINES)).get("faithfulness")
    assert cost is not None
    assert model.images == 5 * cost.forward


def _search_inputs(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(18, 3, 16, 16, generator=gen)
    labels = torch.arange(18) % 3
    candidates = {
        "m@l": torch.rand(18, 4, 4, generator=gen),
        "n@l": torch.rand(18, 4, 4, generator=gen),
    }
    return images, labels, candidates, ["a", "b", "c"]


def test_search_forward_passes_is_what_the_search_runs():
    model = Counting()
    images, labels, candidates, names = _search_inputs()
    proposals = T.region_proposals(images, labels, candidates, names)
    assert set(proposals) == set(names)
    assert all(len(v) == 4 for v in proposals.values())  # 2 maps, contrast, contrast peak
    before = torch.zeros(18, dtype=torch.long)
    found = T.search_region_cues(model, images, labels, candidates, names, before=before)
    assert set(found) == set(names)

    def passes(found) -> int:  # pastes of every distinct box, controls made, the ablation
        total = 0
        for cname, search in found.items():
            boxes = {tuple(c["box"]): c["controlled"] for c in search.candidates}
            own = int((labels == names.index(cname)).sum())
            total += (len(boxes) + sum(boxes.values())) * (18 - own) + own
        return total

    assert model.images == passes(found)
    least = T.search_forward_passes(labels, proposals, names)
    most = T.search_forward_passes(labels, proposals, names, controls=None)
    assert least <= model.images <= most
    # without the predictions given, they are made once for every class
    model.images = 0
    found = T.search_region_cues(model, images, labels, candidates, names)
    assert model.images == passes(found) + 18


class Fixed(nn.Module):
    """Predicts class 0 unless the top-left 4x4 corner is bright: then class 1; a bright
    bottom-right corner gives class 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tl = x[:, :, :4, :4].mean(dim=(1, 2, 3))
        br = x[:, :, -4:, -4:].mean(dim=(1, 2, 3))
        logits = torch.stack([torch.full_like(tl, 0.6), tl, br], dim=1)
        return logits * 10


def test_the_search_chooses_what_controlling_every_box_chooses():
    from reporter.metrics.trust.interventions import _paste_into_other_classes

    gen = torch.Generator().manual_seed(3)
    images = torch.rand(30, 3, 16, 16, generator=gen) * 0.5
    labels = torch.arange(30) % 3
    images[labels == 1, :, :4, :4] = 1.0  # class 1 carries a corner cue
    images[labels == 2, :, -4:, -4:] = 1.0
    candidates = {"noise@l": torch.rand(30, 16, 16, generator=gen)}
    names = ["a", "b", "c"]
    model = Fixed()
    found = T.search_region_cues(model, images, labels, candidates, names, area=1 / 16)
    proposals = T.region_proposals(images, labels, candidates, names, area=1 / 16)
    before = torch.stack([model(images[i : i + 1]).argmax(1)[0] for i in range(30)])
    for cname, regions in proposals.items():
        index = names.index(cname)
        sel = labels == index
        full = {}
        for _, region in regions:  # the old way: every distinct box with its control
            if region.box not in full:
                full[region.box] = _paste_into_other_classes(
                    model,
                    images,
                    labels,
                    sel,
                    index,
                    region.box,
                    cname,
                    0,
                    128,
                    0.95,
                    before=before[~sel],
                )
        best = max(full, key=lambda b: full[b].net_flip_rate)
        assert tuple(found[cname].cue.region.box) == best
        assert found[cname].cue.paste == full[best]  # same draws, same numbers
    assert found["b"].flagged and found["c"].flagged and not found["a"].flagged
    controls = [c["controlled"] for v in found.values() for c in v.candidates]
    assert not all(controls)  # controls were saved


def test_plan_keeps_every_count_when_the_estimate_fits():
    requested = {"sanity": 24, "faithfulness": 32, "region": 96}
    plan = plan_trust(
        120, requested, _costs(), explain_s=0.001, forward_s=0.0001, spent_seconds=1.0
    )
    assert plan.images == requested and not plan.reduced and plan.scale == 1.0
    assert plan.as_dict()["reduced"] is False
    assert plan.as_dict()["measured"]["scale"] == 1.0


def test_plan_scales_every_check_by_one_factor():
    requested = {"sanity": 24, "faithfulness": 32, "region": 96}
    costs = {
        "sanity": CheckCost(explain=1, forward=0),
        "faithfulness": CheckCost(explain=0, forward=1),
        "region": CheckCost(explain=0, forward=1),
    }
    # 152 s at the requested counts, 10 s spent, 86 s left: factor 0.5658 -> floors of n * f
    plan = plan_trust(96, requested, costs, explain_s=1.0, forward_s=1.0, spent_seconds=10)
    assert plan.scale == pytest.approx(86 / 152)
    assert plan.images == {"sanity": 13, "faithfulness": 18, "region": 54}
    assert plan.estimated_seconds == {"sanity": 24, "faithfulness": 32, "region": 96}
    assert plan.planned_seconds == {"sanity": 13, "faithfulness": 18, "region": 54}
    assert sum(plan.planned_seconds.values()) <= 86
    assert plan.reduced


def test_plan_never_goes_below_the_floors():
    requested = {"sanity": 24, "faithfulness": 5, "region": 96}
    plan = plan_trust(
        1, requested, _costs(), explain_s=1.0, forward_s=1.0, spent_seconds=5, classes=10
    )
    assert plan.scale == 0.0
    # faithfulness asked for fewer than its floor: kept; region: 4 per class beats 32
    assert plan.images == {"sanity": FLOORS["sanity"], "faithfulness": 5, "region": 40}


def test_budget_zero_is_no_limit():
    requested = {"sanity": 24, "faithfulness": 32, "region": 96}
    plan = plan_trust(0, requested, _costs(), explain_s=10.0, forward_s=10.0)
    assert plan.images == requested and not plan.reduced


def _budget(reduced: bool = True) -> dict:
    return {
        "budget_seconds": 120.0,
        "requested": {"sanity": 24, "faithfulness": 32, "region": 96},
        "images": {"sanity": 8, "faithfulness": 10, "region": 96}
        if reduced
        else {"sanity": 24, "faithfulness": 32, "region": 96},
        "reduced": reduced,
        "measured": {
            "explain_ms": 37.6,
            "forward_ms": 41.2,
            "spent_seconds": 12.0,
            "estimated_seconds": {"sanity": 22.6, "faithfulness": 265.0, "region": 120.4},
            "planned_seconds": {"sanity": 7.5, "faithfulness": 82.8, "region": 120.4},
            "scale": 0.3,
        },
    }


def test_the_finding_names_the_reduced_checks_and_the_measured_cost():
    (found,) = budget_findings({"trust": {"budget": _budget()}})
    assert found["id"] == "trust-budget-reduced" and found["severity"] == "info"
    assert found["statement"] == (
        "The trust checks ran on fewer images than configured to fit their time budget of "
        "120 s (this model took 41 ms per image for a forward pass and 38 ms for its maps "
        "here): randomization test 8 of 24 images and deletion / insertion 10 of 32 images. "
        "Their intervals are wider than the configured counts give."
    )
    assert found["numbers"]["requested"] == {"sanity": 24, "faithfulness": 32}
    assert "about 408 s" in found["recommendation"]
    assert budget_findings({"trust": {"budget": _budget(reduced=False)}}) == []
    assert budget_findings({"trust": {}}) == []


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_budget_flag_is_one_line(value: str, tmp_path: Path):
    result = CliRunner().invoke(cli, ["audit", "--trust-budget", value, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--trust-budget" in result.output and "Traceback" not in result.output


def test_a_tiny_budget_runs_the_floors_and_says_so(tmp_path: Path):
    images = make_image_folder(tmp_path / "images", {"a": 70, "b": 70}, size=12)
    out = tmp_path / "out"
    args = [
        "audit",
        "--data",
        str(images),
        "--split",
        "all",
        "--out",
        str(out),
        "--format",
        "json,html",
        "--cache-dir",
        str(tmp_path / "c"),
        "--featvis-channels",
        "0",
        "--samples-per-class",
        "1",
        "--quiet",
        "--methods",
        "gradcam",
        "--epochs",
        "1",
        "--input-size",
        "16",
        "--trust-budget",
        "0.001",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text())
    trust = audit["trust"]
    budget = trust["budget"]
    assert budget["reduced"] and budget["budget_seconds"] == 0.001
    n = trust["sample"]
    assert n > 24
    assert budget["requested"] == {"sanity": 24, "faithfulness": min(32, n), "region": n}
    assert budget["images"] == {"sanity": 8, "faithfulness": 8, "region": min(32, n)}
    assert budget["measured"]["forward_ms"] > 0 and budget["measured"]["explain_ms"] > 0
    assert trust["settings"]["sanity_images"] == 24  # what was configured ...
    assert trust["sanity_images"] == 8  # ... and what ran
    assert trust["faithfulness"]["images"] == 8
    assert trust["sanity_rules"]["images"] == 8
    assert all(g["n_maps"] <= 8 * 3 for g in trust["sanity"]["gradcam"]["layers"].values())
    assert [f["id"] for f in audit["findings"] if f["id"] == "trust-budget-reduced"]
    assert key_findings(audit) == audit["findings"]
    html = (out / "report.html").read_text()
    assert "the randomization test ran on 8 of 24 images" in html
    assert audit["command"].endswith("--trust-budget 0.001")


def test_every_prefix_of_the_trust_sample_is_balanced_over_the_classes():
    import numpy as np

    labels = np.repeat(np.arange(5), [30, 2, 10, 10, 10])  # sorted, as a folder lists them
    order = stage.interleaved_by_class(labels, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(len(labels)))
    first = labels[order[:10]]
    assert sorted(np.bincount(first).tolist()) == [2, 2, 2, 2, 2]
    # a class with fewer images runs out; the others go on in turn
    assert np.bincount(labels[order[:26]]).tolist() == [6, 2, 6, 6, 6]
    again = stage.interleaved_by_class(labels, np.random.default_rng(0))
    assert (order == again).all()
