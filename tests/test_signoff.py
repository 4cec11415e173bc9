"""The sign-off block and the report id: computed over audit.json without its volatile keys,
recomputed from a bundle by reporter.bundle.report_id, unchanged by rendering again."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from reporter.audit.findings import key_findings, verdict_rules
from reporter.audit.run import signoff_section
from reporter.audit.verdict import verdict
from reporter.bundle import REPORT_ID_EXCLUDES, SCHEMA_VERSION, read_bundle, report_id
from reporter.report.writer import render_bundle

EXAMPLE = Path(__file__).resolve().parent.parent / "example_reports" / "shapes-shortcut"


def finish(audit: dict[str, Any], signoff: dict[str, Any] | None = None) -> dict[str, Any]:
    """What run_audit's assemble does after the stages: findings, verdict, sign-off, id."""
    audit["schema_version"] = SCHEMA_VERSION
    training = audit["model"].get("training") or {}
    audit["metrics"]["train_accuracy"] = training.get("final_train_accuracy")
    rules = verdict_rules()
    audit["findings"] = key_findings(audit, rules)
    audit["verdict"] = verdict(audit, rules)
    audit["signoff"] = signoff_section(audit, signoff or {})
    audit["signoff"]["report_id"] = report_id(audit)
    return audit


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shapes-shortcut example bundle, brought to this schema by this version's stages."""
    folder = tmp_path_factory.mktemp("signoff") / "bundle"
    folder.mkdir()
    shutil.copytree(EXAMPLE / "artifacts", folder / "artifacts")
    audit = json.loads((EXAMPLE / "audit.json").read_text(encoding="utf-8"))
    audit = finish(audit, {"reviewer": "R. Viewer"})
    (folder / "audit.json").write_text(json.dumps(audit, indent=2), encoding="utf-8")
    render_bundle(folder, formats=["html"])
    return folder


def _audit() -> dict[str, Any]:
    return {
        "model": {"sha256": "ab" * 32, "training_data_fingerprint": "t1"},
        "dataset": {"fingerprint": "d1"},
        "environment": {"reporter": "9.9"},
        "verdict": {"level": "review"},
        "metrics": {"accuracy": 0.5, "x": [0.1, float("nan")]},
        "timings": {"explain": 1.0},
    }


def test_report_id_ignores_volatile_keys_and_follows_the_rest() -> None:
    audit = _audit()
    audit["signoff"] = signoff_section(audit, {"approver": "A"})
    first = report_id(audit)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    volatile = copy.deepcopy(audit)
    volatile["timings"] = {"explain": 2.5}
    volatile["rendering"] = {"seconds": 3.0}
    volatile["artifacts"] = [{"file": "artifacts/x.npz"}]
    volatile["signoff"]["report_id"] = first
    assert report_id(volatile) == first
    assert set(REPORT_ID_EXCLUDES) == {"timings", "rendering", "artifacts", "signoff.report_id"}
    changed = copy.deepcopy(audit)
    changed["metrics"]["accuracy"] = 0.51
    assert report_id(changed) != first
    signed = copy.deepcopy(audit)
    signed["signoff"]["approver"] = "B"
    assert report_id(signed) != first


def test_signoff_section_names_fingerprints_status_and_blank_lines() -> None:
    got = signoff_section(_audit(), {"reviewer": "R"})
    assert got == {
        "report_id": None,
        "report_id_excludes": list(REPORT_ID_EXCLUDES),
        "tool_version": "9.9",
        "data_fingerprint": "d1",
        "training_data_fingerprint": "t1",
        "weights_sha256": "ab" * 32,
        "status": "review",
        "reviewer": "R",
        "approver": None,
        "date": None,
    }


def test_report_id_is_recomputed_from_the_bundle_and_survives_rendering(bundle: Path) -> None:
    audit, _ = read_bundle(bundle)
    rid = audit["signoff"]["report_id"]
    assert report_id(audit) == rid
    html = (bundle / "report.html").read_text(encoding="utf-8")
    assert rid in html and "R. Viewer" in html
    assert html.count('class="sign-line"') == 2  # approver and date left to sign
    render_bundle(bundle, formats=["html"])
    again, _ = read_bundle(bundle)
    assert again == audit and report_id(again) == rid
    assert rid in (bundle / "report.html").read_text(encoding="utf-8")


def test_every_evidence_anchor_is_an_id_in_the_report(bundle: Path) -> None:
    audit, _ = read_bundle(bundle)
    html = (bundle / "report.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'\sid="([^"]+)"', html))
    anchors = {f["evidence"]["anchor"] for f in audit["findings"]}
    assert anchors and anchors <= ids, anchors - ids
    assert {f"finding-{f['id']}" for f in audit["findings"]} <= ids
    # the shortcut model: fail, its shortcut the first finding, the evidence on the page
    assert audit["verdict"]["level"] == "fail"
    assert audit["findings"][0]["severity"] == "high" and "shortcut" in audit["findings"][0]["id"]
    assert 'id="decision-shortcut-chart"' in html


def test_older_bundles_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    from reporter.errors import ReporterError

    (tmp_path / "audit.json").write_text(json.dumps({"schema_version": 2}))
    with pytest.raises(ReporterError, match="schema_version 2; this reporter reads version 3"):
        read_bundle(tmp_path)
