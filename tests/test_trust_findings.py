"""Trust findings are functions of audit.json numbers; fully_removed is the deletion end point."""

from __future__ import annotations

import torch
from torch import nn

from reporter.audit.trust_findings import (
    BLURRED_ACCURACY,
    borderline_sanity_findings,
    cue_location_findings,
    fully_removed_findings,
    trust_findings,
)
from reporter.metrics.trust import fully_removed

KEYS = {"id", "severity", "statement", "numbers", "evidence", "recommendation"}


def _audit(acc=0.92, lo=0.8, status="inconclusive", position="top-left corner"):
    return {
        "trust": {
            "shortcut": {
                "circle": {
                    "flagged": True,
                    "cue_position": position,
                    "cue_box": [0, 0, 7, 7],
                    "region": {
                        "area_fraction": 0.0478,
                        "flip_rate": 0.9,
                        "control_flip_rate": 0.05,
                        "paste": {"n_eligible": 60},
                    },
                },
                "square": {"flagged": False, "cue_position": None},
            },
            "faithfulness": {
                "fully_removed": {
                    "n": 32,
                    "intact_accuracy": 1.0,
                    "chance": 0.25,
                    "baselines": {
                        "blur": {
                            "accuracy": acc,
                            "interval": [lo, 0.97],
                            "same_prediction": acc,
                            "confidence": 0.7,
                        }
                    },
                }
            },
            "sanity": {
                "gradcam": {
                    "layers": {
                        "features.relu4": {
                            "status": status,
                            "spearman": 0.48,
                            "interval": [0.41, 0.56],
                            "thresholds": {"spearman": 0.5},
                            "n_images": 24,
                            "n_seeds": 3,
                        }
                    }
                }
            },
        }
    }


def test_cue_location_record_states_its_numbers():
    (rec,) = cue_location_findings(_audit())
    assert set(rec) == KEYS and rec["severity"] == "high" and rec["id"] == "trust-cue-circle"
    assert rec["numbers"]["position"] == "top-left corner" and rec["numbers"]["n"] == 60
    assert rec["statement"] == (
        "The cue of class “circle” sits in the top-left corner: pasting that region (5% of the "
        "image) into 60 images of other classes makes the model predict “circle” for 90% of "
        "them (5% with the same region from another class)."
    )
    assert cue_location_findings(_audit(position=None)) == []


def test_fully_blurred_finding_only_above_its_rule():
    (rec,) = fully_removed_findings(_audit())
    assert rec["severity"] == "low" and rec["numbers"]["accuracy"] == 0.92
    assert rec["statement"].startswith(
        "Fully blurred images are still classified correctly 92% of the time (95% interval "
        "80%–97%, n = 32; 100% intact, chance 25%)"
    )
    assert fully_removed_findings(_audit(acc=BLURRED_ACCURACY - 0.01)) == []
    assert fully_removed_findings(_audit(acc=0.85, lo=0.45)) == []  # lower end not above 0.5
    assert fully_removed_findings(_audit(acc=0.5625, lo=0.39)) == []  # the clean shapes model
    assert fully_removed_findings({"trust": {}}) == []


def test_borderline_sanity_and_order():
    (rec,) = borderline_sanity_findings(_audit())
    assert rec["severity"] == "low"
    assert (
        "0.48 (95% interval 0.41–0.56) against the threshold 0.50, on 24 images and 3 seeds"
        in (rec["statement"])
    )
    assert borderline_sanity_findings(_audit(status="passed")) == []
    assert [r["severity"] for r in trust_findings(_audit())] == ["high", "low", "low"]


class ColourReader(nn.Module):
    """Predicts from the mean colour only: a blur keeps it, zeros do not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((2, 3))
        return torch.stack([m[:, 0], m[:, 1], 0.05 + 0 * m[:, 0]], 1) * 10


def test_fully_removed_on_a_colour_reader():
    x = torch.zeros(6, 3, 8, 8)
    x[:3, 0] = 1.0  # red images: class 0
    x[3:, 1] = 1.0  # green images: class 1
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    out = fully_removed(ColourReader(), x, labels, labels)
    assert out["n"] == 6 and out["intact_accuracy"] == 1.0 and abs(out["chance"] - 1 / 3) < 1e-9
    blur, zero = out["baselines"]["blur"], out["baselines"]["zero"]
    assert blur["accuracy"] == 1.0 and blur["same_prediction"] == 1.0
    assert zero["accuracy"] == 0.0  # all-zero images: class 2 (the bias) for every image
    assert 0 < blur["interval"][0] < 1.0 and blur["confidence"] > 0.99
