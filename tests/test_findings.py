"""Findings as records: one test per rule, each against hand-made audit.json numbers.

Several tests guard a sentence that once contradicted its own numbers (issue 15): a claim that
saliency lies where it should while classes had most of it outside the object, a claim about
masks where there were none, "at least one class" where all were, checks without their n, and
sanity and faithfulness results left unreconciled.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reporter.audit.findings import (
    SEVERITIES,
    finding,
    fully_removed_finding,
    key_findings,
    rank,
    verdict_rules,
)


def _audit(**overrides: Any) -> dict[str, Any]:
    audit: dict[str, Any] = {
        "model": {"training": {"epochs": 3, "images": 1200, "data": "d"}},
        "dataset": {"masks": False, "shortcut_check": None},
        "metrics": {
            "n_images": 100,
            "accuracy": 0.9,
            "macro_f1": 0.9,
            "per_class": [
                {"class": "a", "recall": 0.95, "support": 50},
                {"class": "b", "recall": 0.85, "support": 50},
            ],
            "confusion_matrix": [[47, 3], [7, 43]],
            "ece": 0.02,
            "mean_confidence": 0.91,
            "calibrated_images": 100,
            "train_accuracy": 0.93,
        },
        "trust": {},
        "explanations": {"methods": [{"name": "gradcam"}]},
        "skipped": [],
    }
    for key, value in overrides.items():
        audit[key] = value
    return audit


def _by_id(audit: dict[str, Any], **rules: Any) -> dict[str, dict[str, Any]]:
    found = key_findings(audit, rules)
    ids = [f["id"] for f in found]
    assert len(ids) == len(set(ids)), ids
    return {f["id"]: f for f in found}


def test_every_finding_is_a_complete_record_and_ranked() -> None:
    audit = _audit()
    audit["metrics"]["ece"] = 0.3  # medium
    audit["skipped"] = [{"path": "x", "reason": "y"}]  # low
    found = key_findings(audit)
    assert found
    for f in found:
        assert set(f) == {"id", "severity", "statement", "numbers", "evidence", "recommendation"}
        assert f["severity"] in SEVERITIES and f["statement"] and f["recommendation"]
        assert set(f["evidence"]) == {"anchor", "label"} and f["evidence"]["anchor"]
    order = [SEVERITIES.index(f["severity"]) for f in found]
    assert order == sorted(order)
    assert found[0]["id"] == "calibration" and found[1]["id"] == "skipped-files"


def test_rank_is_stable_within_a_severity() -> None:
    def f(i: str, s: str) -> dict[str, Any]:
        return finding(i, s, i, numbers={}, anchor="x", label="x", recommendation="x")

    ranked = rank([f("1", "info"), f("2", "high"), f("3", "info"), f("4", "high")])
    assert [r["id"] for r in ranked] == ["2", "4", "1", "3"]
    with pytest.raises(ValueError, match="severity"):
        f("5", "urgent")


def _localization(energy: dict[str, float]) -> dict[str, Any]:
    return {
        "methods": {"gradcam": {"energy_per_class": energy, "pointing_game": 0.9}},
        "object_area": 0.13,
        "images": 200,
    }


def test_saliency_off_the_object_names_each_class_and_how_much() -> None:
    # shapes-clean p13: two classes with 54% and 66% of their saliency outside the object
    audit = _audit(dataset={"masks": True, "shortcut_check": None})
    audit["trust"] = {"localization": _localization({"a": 0.46, "b": 0.34, "c": 0.8, "d": 0.9})}
    f = _by_id(audit)["saliency-off-object"]
    assert f["severity"] == "low"
    assert f["statement"].startswith(
        "For 2 of 4 classes most of the Grad-CAM saliency lies outside the object mask: "
        "“b” 66% and “a” 54% of it (n = 200 images; objects cover 13% of the image)."
    )
    assert "mostly where it should" not in f["statement"]
    assert f["numbers"]["outside"]["b"] == pytest.approx(0.66)
    assert f["evidence"]["anchor"] == "trust-localization"


def test_saliency_on_the_object_gives_the_worst_class() -> None:
    audit = _audit(dataset={"masks": True, "shortcut_check": None})
    audit["trust"] = {"localization": _localization({"a": 0.7, "b": 0.55})}
    found = _by_id(audit)
    assert "saliency-off-object" not in found
    assert found["saliency-on-object"]["statement"] == (
        "For every class most of the Grad-CAM saliency lies on the object (at most 45% outside, "
        "for “b”; n = 200 images; objects cover 13% of the image)."
    )


def test_without_masks_the_maps_are_checked_against_the_border_only() -> None:
    border = {"method": "gradcam", "mean": 0.33, "area": 0.527, "class": "a", "class_value": 0.3}
    audit = _audit()
    audit["explanations"]["border_summary"] = border
    text = _by_id(audit)["border-saliency"]["statement"]
    assert text.endswith("without object masks the maps are checked against the border only.")
    audit["dataset"]["masks"] = True
    assert "border only" not in _by_id(audit)["border-saliency"]["statement"]


def _mask_entry(flagged: bool, n: int = 50, changed: float = 0.8) -> dict[str, Any]:
    e = {"n": n, "accuracy_with": 0.4, "accuracy_without": 0.5, "drop": -0.1, "changed": changed}
    return {"flagged": flagged, "basis": "mask", "intervention": {**e, "interval": [-0.2, 0.0]}}


def test_shortcut_counts_the_flagged_classes_and_is_the_first_high_finding() -> None:
    audit = _audit()
    audit["trust"] = {"shortcut": {c: _mask_entry(True, n=40 + i) for i, c in enumerate("abcd")}}
    found = key_findings(audit)
    assert found[0]["id"] == "shortcut-intervention" and found[0]["severity"] == "high"
    text = found[0]["statement"]
    assert text.startswith("Shortcut for 4 of 4 classes")
    assert "at least one" not in text and "n = 40–43 per class" in text
    assert found[0]["numbers"]["flagged_classes"] == 4
    assert found[0]["evidence"]["anchor"] == "trust-shortcut"


def test_known_shortcut_uses_the_configured_drop() -> None:
    check = {"accuracy_shortcut_kept": 0.95, "accuracy_shortcut_absent": 0.8, "spurious": 0.9}
    audit = _audit(dataset={"masks": True, "shortcut_check": check})
    assert _by_id(audit)["shortcut-known-background"]["severity"] == "high"  # drop 0.15 > 0.1
    relaxed = _by_id(audit, shortcut_accuracy_drop=0.2)
    assert "shortcut-known-background" not in relaxed
    assert relaxed["no-known-background-shortcut"]["statement"].startswith(
        "The background does not carry the decision: accuracy is 95% with"
    )


def _sanity(status: str) -> dict[str, Any]:
    return {
        "status": status,
        "layer": "l3",
        "spearman": 0.7,
        "interval": [0.6, 0.8],
        "floor_spearman": 0.65,
        "n_seeds": 3,
        "n_images": 24,
        "thresholds": {"spearman": 0.5},
        "meaning": "mainly shows where the object is.",
    }


def _faith(**aucs: tuple[float, float]) -> dict[str, Any]:
    """Faithfulness section: method -> (deletion, insertion); random maps at 0.5 / 0.5."""
    return {
        "images": 32,
        "baselines": ["blur", "zero"],
        "methods": {
            m: {
                "baselines": {
                    "blur": {
                        "deletion_auc": d,
                        "insertion_auc": i,
                        "random_deletion_auc": 0.5,
                        "random_insertion_auc": 0.5,
                    }
                }
            }
            for m, (d, i) in aucs.items()
        },
    }


def test_sanity_states_its_n_and_severity() -> None:
    audit = _audit()
    audit["trust"] = {
        "sanity": {"eigencam": _sanity("failed"), "layercam": _sanity("inconclusive")}
    }
    found = _by_id(audit)
    failed = found["sanity-failed-eigencam"]
    assert failed["severity"] == "medium" and failed["evidence"]["anchor"] == "trust-sanity"
    assert "(3 seeds, n = 24 images)" in failed["statement"]
    assert found["sanity-inconclusive-layercam"]["severity"] == "low"


def test_sanity_and_faithfulness_disagreeing_get_one_reconciling_sentence() -> None:
    # shapes-clean: methods that "fail -- do not read them" beat the method that passes
    audit = _audit()
    audit["trust"] = {
        "sanity": {"gradcam": _sanity("passed"), "eigencam": _sanity("failed")},
        "faithfulness": _faith(gradcam=(0.4, 0.6), eigencam=(0.3, 0.7)),
    }
    f = _by_id(audit)["sanity-faithfulness-disagree"]
    assert f["statement"].startswith(
        "EigenCAM failed the randomization test yet scores better on deletion or insertion "
        "(blur baseline, n = 32 images) than Grad-CAM, which passed"
    )
    assert f["numbers"]["insertion_auc"] == {"eigencam": 0.7, "gradcam": 0.6}
    audit["trust"]["faithfulness"] = _faith(gradcam=(0.3, 0.7), eigencam=(0.4, 0.6))
    assert "sanity-faithfulness-disagree" not in _by_id(audit)


def test_faithfulness_is_compared_with_random_maps_in_words() -> None:
    audit = _audit()
    audit["trust"] = {"faithfulness": _faith(gradcam=(0.3, 0.7), layercam=(0.4, 0.45),
                                              eigencam=(0.6, 0.4))}  # fmt: skip
    f = _by_id(audit)["faithfulness-vs-random"]
    assert f["statement"] == (
        "Deletion and insertion (blur baseline, n = 32 images), compared with random maps: "
        "Grad-CAM beats random maps on both (the class probability falls faster when its "
        "salient pixels are removed and rises faster when they are inserted); LayerCAM beats "
        "random maps on only one of the two; EigenCAM does no better than random maps: its "
        "ranking of pixels says nothing about what drives the score."
    )
    assert f["severity"] == "low"
    audit["trust"] = {"faithfulness": _faith(gradcam=(0.3, 0.7))}
    assert _by_id(audit)["faithfulness-vs-random"]["severity"] == "info"


def test_training_accuracy_is_beside_test_accuracy_and_a_gap_is_a_finding() -> None:
    found = _by_id(_audit())
    assert found["accuracy"]["statement"] == (
        "The model classifies 90% of the 100 test images correctly (macro F1 0.900); in its "
        "last training epoch it classified 93% of its 1,200 training images correctly."
    )
    assert "train-test-gap" not in found  # 3 points
    audit = _audit()
    audit["metrics"]["train_accuracy"] = 0.97
    audit["metrics"]["accuracy"] = 0.29
    gap = _by_id(audit)["train-test-gap"]
    assert gap["severity"] == "medium" and "68 points below" in gap["statement"]
    audit["metrics"]["train_accuracy"] = None
    assert "training" not in _by_id(audit)["accuracy"]["statement"]


def test_weak_classes_rule_uses_recall_threshold_and_minimum_n() -> None:
    audit = _audit()
    audit["metrics"]["per_class"] = [
        {"class": "a", "recall": 0.3, "support": 12},
        {"class": "b", "recall": 0.2, "support": 9},  # too few images to call weak
        {"class": "c", "recall": 0.5, "support": 40},  # at the threshold: not below
        {"class": "d", "recall": 0.9, "support": 40},
    ]
    f = _by_id(audit)["weak-classes"]
    assert f["severity"] == "medium"
    assert f["statement"] == (
        "1 of 4 classes is weak (recall below 50% on at least 10 test images): "
        "“a” (recall 30%, n = 12)."
    )
    more = _by_id(audit, weak_class_recall=0.6, weak_class_min_images=5)["weak-classes"]
    assert list(more["numbers"]["weak"]) == ["b", "a", "c"]
    none = _by_id(audit, weak_class_recall=0.1)
    assert "weak-classes" not in none
    assert none["weakest-classes"]["statement"].startswith(
        "The weakest classes are “b” (recall 20%, n = 9) and “a” (recall 30%, n = 12)"
    )


def test_calibration_severity_follows_the_ece_rule_and_states_n() -> None:
    audit = _audit()
    assert _by_id(audit)["calibration"]["statement"] == (
        "Confidence is well calibrated (expected calibration error 0.020, n = 100 images)."
    )
    audit["metrics"]["ece"] = 0.05
    assert _by_id(audit)["calibration"]["severity"] == "low"
    audit["metrics"]["ece"] = 0.15
    assert _by_id(audit)["calibration"]["severity"] == "medium"
    assert _by_id(audit, ece_review=0.2)["calibration"]["severity"] == "low"


def test_fully_removed_confidence_is_evidence_of_a_shortcut() -> None:
    # "a fully blurred image still classified at 92% is itself evidence of a shortcut"
    f = fully_removed_finding(0.92, 32, 4, intact=0.95)
    assert f["severity"] == "medium" and f["id"] == "fully-removed-confidence"
    assert f["statement"].startswith(
        "With every pixel blurred (n = 32 images), the model still gives the class it predicted "
        "on the intact image a mean probability of 92% (95% on the intact images; chance: 25%): "
        "the removal barely matters to it"
    )
    assert fully_removed_finding(0.54, 32, 4, intact=0.95)["severity"] == "info"  # 57% kept
    low = fully_removed_finding(0.3, 32, 4)
    assert (
        low["severity"] == "info"
        and "close to what it gives with nothing to see" in (low["statement"])
    )
    assert fully_removed_finding(0.45, 10, 2)["severity"] == "info"  # under twice chance
    assert fully_removed_finding(0.6, 10, 4)["severity"] == "medium"  # no intact: above 0.5
    assert "mean colour" in fully_removed_finding(0.9, 8, 10, baseline="zero")["statement"]


@pytest.mark.parametrize(("last", "expected"), [(0.917, ["medium"]), (0.541, [])])
def test_fully_blurred_point_of_the_deletion_curve_is_read(last: float, expected: list) -> None:
    # the shapes-shortcut (0.917 of 0.945 kept) and shapes-clean (0.541 of 0.95) examples
    audit = _audit()
    audit["dataset"]["classes"] = ["a", "b", "c", "d"]
    audit["trust"] = {"faithfulness": _faith(gradcam=(0.3, 0.7))}
    blur = audit["trust"]["faithfulness"]["methods"]["gradcam"]["baselines"]["blur"]
    blur["deletion_curve"] = [0.945, 0.8, last]
    found = [f for f in key_findings(audit) if f["id"] == "fully-removed-confidence"]
    assert [f["severity"] for f in found] == expected
    if found:
        assert found[0]["numbers"]["confidence"] == last and found[0]["numbers"]["n"] == 32


def test_findings_read_numbers_only_and_do_not_change_the_audit() -> None:
    audit = _audit(dataset={"masks": True, "shortcut_check": None})
    audit["trust"] = {"localization": _localization({"a": 0.46, "b": 0.9})}
    before = copy.deepcopy(audit)
    assert key_findings(audit) == key_findings(copy.deepcopy(audit))
    assert audit == before


def test_verdict_rules_defaults_are_the_config_table() -> None:
    from reporter.config import VERDICT_FIELDS

    rules = verdict_rules({"ece_review": 0.3})
    assert set(rules) == set(VERDICT_FIELDS) and rules["ece_review"] == 0.3
    assert verdict_rules()["shortcut_accuracy_drop"] == 0.1


def _region() -> dict[str, Any]:
    return {
        "area_fraction": 0.05,
        "flip_rate": 0.89,
        "control_flip_rate": 0.0,
        "paste": {"n_eligible": 60},
    }


def test_trust_stage_findings_join_the_ranked_list_without_repeating_a_fact() -> None:
    """The trust stage's records (reporter.audit.trust_findings) are wired in: a cue located for
    a class the background swap flagged (a class flagged by the paste names its region in its
    own finding), borderline layers of a method that passed overall (a failed or inconclusive
    method has its own finding), and the fully-blurred rule instead of the deletion-curve one
    when the bundle has ``trust.faithfulness.fully_removed``."""
    layer = {
        "status": "inconclusive",
        "interval": [0.45, 0.56],
        "spearman": 0.5,
        "thresholds": {"spearman": 0.5},
        "n_images": 24,
        "n_seeds": 3,
    }
    audit = _audit(
        trust={
            "shortcut": {
                "a": {"flagged": True, "basis": "mask", "cue_position": "top-left corner",
                      "cue_box": [0, 0, 4, 4], "region": _region()},
                "b": {"flagged": True, "basis": "region", "cue_position": "bottom-right corner",
                      "cue_box": [28, 28, 32, 32], "region": _region()},
            },
            "sanity": {
                "gradcam": {"status": "passed", "layers": {"relu3": layer}},
                "eigencam": {"status": "failed", "layers": {"relu3": layer}},
            },
            "faithfulness": {
                "images": 32,
                "fully_removed": {
                    "n": 40,
                    "intact_accuracy": 0.95,
                    "chance": 0.5,
                    "baselines": {
                        "blur": {"accuracy": 0.9, "interval": [0.77, 0.96], "confidence": 0.8}
                    },
                },
            },
        }
    )  # fmt: skip
    found = _by_id(audit)
    assert "trust-cue-a" in found and found["trust-cue-a"]["severity"] == "high"
    assert "top-left corner" in found["trust-cue-a"]["statement"]
    assert "trust-cue-b" not in found
    assert "trust-sanity-borderline-gradcam-relu3" in found
    assert "trust-sanity-borderline-eigencam-relu3" not in found
    assert "trust-fully-blurred" in found and "fully-removed-confidence" not in found
    assert found["trust-fully-blurred"]["numbers"]["accuracy"] == 0.9
    # below the rule's 80 %: no fully-blurred finding at all
    audit["trust"]["faithfulness"]["fully_removed"]["baselines"]["blur"]["accuracy"] = 0.7
    found = _by_id(audit)
    assert "trust-fully-blurred" not in found and "fully-removed-confidence" not in found
