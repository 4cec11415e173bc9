"""The ``[trust]`` table of audit.toml: checked, complete, written back, equal to the code's
constants by default; and the trust stage's arguments follow it."""

from __future__ import annotations

import tomllib

import pytest

from reporter.audit import trust as stage
from reporter.config import TRUST_SETTINGS, AuditConfig, check_trust, load_config
from reporter.errors import ReporterError
from reporter.metrics import trust as metrics
from reporter.metrics.trust import interventions


def test_defaults_are_the_code_constants():
    t = AuditConfig().trust
    assert set(t) == set(TRUST_SETTINGS)
    assert t["drop"] == interventions.DROP_THRESHOLD
    assert t["drop_interval_lower"] == interventions.CI_LOWER_THRESHOLD
    assert t["changed"] == interventions.CHANGE_THRESHOLD
    assert t["changed_interval_lower"] == interventions.CHANGE_LOWER_THRESHOLD
    assert t["pull"] == interventions.PULL_THRESHOLD
    assert t["pull_interval_lower"] == interventions.PULL_LOWER_THRESHOLD
    assert t["region_area"] == interventions.REGION_AREA
    assert t["max_region_area"] == interventions.MAX_REGION_AREA
    assert t["flip"] == interventions.FLIP_THRESHOLD
    assert t["flip_interval_lower"] == interventions.FLIP_LOWER_THRESHOLD
    assert t["sanity_spearman"] == metrics.SPEARMAN_THRESHOLD
    assert t["sanity_ssim"] == metrics.SSIM_THRESHOLD
    assert t["sanity_images"] == stage.SANITY_IMAGES
    assert t["sanity_seeds"] == len(stage.SANITY_SEEDS)
    assert t["faithfulness_images"] == stage.FAITHFULNESS_IMAGES
    assert t["region_images"] == stage.REGION_IMAGES
    assert set(stage.SHORTCUT_RULE_KEYS) <= set(t)


def test_toml_table_read_checked_and_written_back(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text('out = "x"\n\n[trust]\ndrop = 0.3\nsanity_seeds = 4\nflip = 1\n')
    config = load_config(path)
    assert config.trust["drop"] == 0.3 and config.trust["sanity_seeds"] == 4
    assert config.trust["flip"] == 1.0 and isinstance(config.trust["flip"], float)
    assert config.trust["pull"] == 0.5  # a default filled in
    again = tomllib.loads(config.to_toml())
    assert again["trust"] == config.trust
    assert load_config(path).trust == AuditConfig(trust=again["trust"]).trust


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("drops = 0.3", "Unknown \\[trust\\] key 'drops'. Valid keys: drop, drop_interval_lower"),
        ('drop = "0.3"', 'trust.drop = "0.3" is a string; expected a number'),
        ("drop = 1.5", "trust.drop = 1.5 is out of range; it must be between 0.0 and 1.0"),
        ("sanity_seeds = 2.5", "trust.sanity_seeds = 2.5 is a number; expected an integer"),
        ("sanity_images = true", "trust.sanity_images = true is a boolean; expected an integer"),
        ("sanity_images = 1", "it must be at least 2"),
        ("region_area = 0.2", "region_area = 0.2 is above trust.max_region_area = 0.1"),
    ],
)
def test_bad_trust_table_is_one_clear_line(tmp_path, table, message):
    path = tmp_path / "audit.toml"
    path.write_text(f"[trust]\n{table}\n")
    with pytest.raises(ReporterError, match=message):
        load_config(path)


def test_trust_must_be_a_table():
    with pytest.raises(ReporterError, match="expected a table"):
        check_trust(0.5)


def test_docs_table_lists_every_key_with_its_default():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "trust.rst").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        if line.startswith("``") and line.count("``") >= 2:
            key = line.split("``")[1]
            if key in TRUST_SETTINGS:
                rows[key] = line.split("``", 2)[2].split()[0]
    assert set(rows) == set(TRUST_SETTINGS)
    for key, (tp, default, *_) in TRUST_SETTINGS.items():
        assert tp(rows[key]) == default, key


def test_stage_arguments_follow_the_table():
    t = AuditConfig(trust={"flip": 0.7, "region_area": 0.03, "bootstrap": 200}).trust
    assert stage.region_rules(t) == {
        "area": 0.03,
        "max_area": 0.1,
        "flip_threshold": 0.7,
        "flip_lower": 0.25,
        "n_boot": 200,
    }
