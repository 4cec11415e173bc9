"""The verdict: its rules, the [verdict] table that configures them, and what audit.json records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reporter.audit.verdict import MAX_REASONS, verdict
from reporter.config import VERDICT_FIELDS, AuditConfig, load_config
from reporter.errors import ReporterError


def _audit(**metrics: Any) -> dict[str, Any]:
    base = {
        "n_images": 100,
        "accuracy": 0.9,
        "ece": 0.02,
        "per_class": [
            {"class": "a", "recall": 0.9, "support": 50},
            {"class": "b", "recall": 0.9, "support": 50},
        ],
    }
    return {"metrics": {**base, **metrics}, "trust": {}, "dataset": {}}


def _flagged() -> dict[str, Any]:
    audit = _audit()
    audit["trust"]["shortcut"] = {"a": {"flagged": True}, "b": {"flagged": False}}
    return audit


def test_clean_model_passes_and_records_the_rules() -> None:
    got = verdict(_audit())
    assert got["level"] == "pass"
    assert got["rules"] == {k: spec.default for k, spec in VERDICT_FIELDS.items()}


def test_a_flagged_shortcut_fails_unless_configured_to_review() -> None:
    got = verdict(_flagged())
    assert got["level"] == "fail"
    assert got["reasons"] == ["an intervention found a shortcut for 1 of 2 classes (“a”)"]
    soft = verdict(_flagged(), {"shortcut_fail": False})
    assert soft["level"] == "review" and soft["reasons"] == got["reasons"]
    assert soft["rules"]["shortcut_fail"] is False


def test_known_shortcut_drop_threshold() -> None:
    audit = _audit()
    audit["dataset"]["shortcut_check"] = {
        "accuracy_shortcut_kept": 0.9,
        "accuracy_shortcut_absent": 0.75,
    }
    assert verdict(audit)["level"] == "fail"
    assert verdict(audit)["reasons"] == [
        "accuracy falls from 90% to 75% without the background shortcut (a drop above 10%)"
    ]
    assert verdict(audit, {"shortcut_accuracy_drop": 0.2})["level"] == "pass"


def test_failed_sanity_sets_review_unless_switched_off() -> None:
    audit = _audit()
    audit["trust"]["sanity"] = {"eigencam": {"status": "failed"}, "gradcam": {"status": "passed"}}
    got = verdict(audit)
    assert got["level"] == "review" and got["reasons"][0].startswith("EigenCAM failed")
    assert verdict(audit, {"sanity_review": False})["level"] == "pass"


def test_ece_threshold() -> None:
    assert verdict(_audit(ece=0.15))["reasons"] == [
        "confidence is poorly calibrated (ECE 0.150 > 0.1)"
    ]
    assert verdict(_audit(ece=0.15), {"ece_review": 0.2})["level"] == "pass"
    assert verdict(_audit(ece=0.1))["level"] == "pass"  # not above


def test_weak_classes_set_review() -> None:
    weak = [
        {"class": "a", "recall": 0.4, "support": 10},
        {"class": "b", "recall": 0.1, "support": 9},
        {"class": "c", "recall": 0.95, "support": 50},
    ]
    got = verdict(_audit(per_class=weak))
    assert got["level"] == "review"
    assert got["reasons"] == ["1 class has a recall below 50% (“a” 40%)"]
    both = verdict(_audit(per_class=weak), {"weak_class_min_images": 5})
    assert both["reasons"] == ["2 classes have a recall below 50% (“b” 10%, “a” 40%)"]
    assert verdict(_audit(per_class=weak), {"weak_class_recall": 0.3})["level"] == "pass"


def test_reasons_are_at_most_two_and_count_the_rest() -> None:
    audit = _audit(ece=0.5, nonfinite_outputs=3, classes_without_images=["z"])
    got = verdict(audit)
    assert len(got["reasons"]) == MAX_REASONS == 2
    assert got["reasons"][0].startswith("confidence is poorly calibrated")
    assert got["reasons"][1] == "2 more rules of this level fired (see findings)"


def test_verdict_table_is_type_checked_with_the_valid_keys_named(tmp_path: Path) -> None:
    valid = r"Unknown verdict key 'ece'\. Valid keys of \[verdict\]: shortcut_fail, shortcut_acc"
    with pytest.raises(ReporterError, match=valid):
        AuditConfig(verdict={"ece": 0.2})
    with pytest.raises(ReporterError, match=r"verdict\.ece_review = \"high\" is a string"):
        AuditConfig(verdict={"ece_review": "high"})
    with pytest.raises(
        ReporterError, match=r"verdict\.shortcut_fail = 1 is an integer; expected a"
    ):
        AuditConfig(verdict={"shortcut_fail": 1})
    with pytest.raises(ReporterError, match=r"verdict\.ece_review = 1\.5 is out of range"):
        AuditConfig(verdict={"ece_review": 1.5})
    with pytest.raises(ReporterError, match=r"signoff\.reviewer = 3 is an integer"):
        AuditConfig(signoff={"reviewer": 3})
    with pytest.raises(ReporterError, match=r"Unknown signoff key 'role'"):
        AuditConfig(signoff={"role": "x"})
    toml = tmp_path / "audit.toml"
    toml.write_text(
        '[verdict]\nece_review = 1\nweak_class_min_images = 3\n[signoff]\nreviewer = "A. B."\n'
    )
    config = load_config(toml)
    assert config.verdict == {"ece_review": 1.0, "weak_class_min_images": 3}
    assert config.signoff == {"reviewer": "A. B."}
    again = tmp_path / "again.toml"
    again.write_text(config.to_toml())
    assert load_config(again).verdict == config.verdict
    toml.write_text("[verdict]\nece_reveiw = 0.2\n")
    with pytest.raises(ReporterError, match=r"audit\.toml: Unknown verdict key 'ece_reveiw'"):
        load_config(toml)


def test_docs_list_every_verdict_key_with_its_default() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "trust.rst").read_text()
    table = text.split(".. _verdict-rules:")[1].split(".. code-block:: toml")[0]
    for key, spec in VERDICT_FIELDS.items():
        default = str(spec.default).lower() if isinstance(spec.default, bool) else spec.default
        assert f"   * - ``{key}``\n     - ``{default}``\n     - {spec.doc[:40]}" in table, key


def test_sanity_reason_names_the_rank_correlation() -> None:
    audit = _audit()
    audit["trust"]["sanity"] = {"eigencam": {"status": "failed", "spearman": 0.8}}
    assert verdict(audit)["reasons"][0].startswith(
        "EigenCAM (rank correlation 0.80) failed the randomization test"
    )


def test_command_line_summary_counts_findings_by_severity() -> None:
    from reporter.audit.run import verdict_summary

    def f(s: str) -> dict[str, str]:
        return {"severity": s}

    audit = {"verdict": {"level": "fail"}, "findings": [f("high"), f("high"), f("low"), f("info")]}
    assert verdict_summary(audit) == "verdict fail: 2 high, 1 low findings"
    assert verdict_summary({"verdict": {"level": "pass"}, "findings": [f("info")]}) == (
        "verdict pass: no problem found"
    )
