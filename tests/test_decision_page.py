"""The decision page: verdict banner, the shortcut evidence (chart and image strip), ranked
findings with evidence links, rendered from hand-made audit numbers and arrays."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from reporter.bundle import Artifacts
from reporter.report.render import template_environment
from reporter.report.views import _cue_rows, decision_evidence


def _audit(flagged: bool, examples: bool) -> dict[str, Any]:
    effect = {"n": 50, "accuracy_with": 0.9, "accuracy_without": 0.3, "changed": 0.7}
    audit: dict[str, Any] = {
        "dataset": {
            "shortcut_check": {"accuracy_shortcut_kept": 0.95, "accuracy_shortcut_absent": 0.29}
            if flagged
            else None
        },
        "trust": {
            "shortcut": {
                "circle": {"flagged": flagged, "basis": "mask", "intervention": effect},
                "square": {"flagged": False, "basis": "mask", "intervention": effect},
            }
        },
        "verdict": {
            "level": "fail" if flagged else "pass",
            "reasons": ["an intervention found a shortcut for 1 of 2 classes (“circle”)"]
            if flagged
            else ["no rule for fail or review fired"],
        },
        "findings": [
            {
                "id": "shortcut-intervention" if flagged else "accuracy",
                "severity": "high" if flagged else "info",
                "statement": "Shortcut for class “circle”." if flagged else "Accuracy is 99%.",
                "numbers": {},
                "evidence": {"anchor": "trust-shortcut", "label": "Shortcut detection table"},
                "recommendation": "Retrain." if flagged else "None needed.",
            }
        ],
    }
    if examples:
        audit["trust"]["shortcut_examples"] = [
            {"class": "circle", "label": "circle", "pred_before": "circle",
             "pred_after": "square", "kind": "background-swap"},
            {"class": "circle", "label": "circle", "pred_before": "circle",
             "pred_after": "cross", "kind": "region-paste"},
        ]  # fmt: skip
    return audit


def _artifacts() -> Artifacts:
    arts = Artifacts()
    arts.put("trust", "shortcut_examples", np.full((2, 8, 8, 3), 200, np.uint8))
    return arts


def _render(audit: dict[str, Any], arts: Artifacts) -> str:
    env = template_environment()
    fig = {"decision": decision_evidence(audit, arts)}
    return env.get_template("sections/decision.html").render(audit=audit, fig=fig)


def test_cue_rows_come_from_the_shortcut_numbers() -> None:
    accuracy, changed = _cue_rows(_audit(True, False))
    assert accuracy == [("all classes (known cue)", 0.95, 0.29)]
    assert changed == [("circle", 0.7, None, "changed")]
    real = _audit(True, False)
    real["dataset"]["shortcut_check"] = None  # own data with masks: per-class recall instead
    assert _cue_rows(real) == ([("circle", 0.9, 0.3)], [("circle", 0.7, None, "changed")])
    assert _cue_rows(_audit(False, False)) == ([], [])


def test_shortcut_page_shows_fail_banner_chart_and_strip() -> None:
    html = _render(_audit(True, True), _artifacts())
    assert 'class="decision-banner fail"' in html and "Verdict: fail" in html
    assert 'id="decision-shortcut-chart"' in html
    assert len(re.findall(r'class="strip-tile"><img src="data:image/png;base64,', html)) == 2
    assert "circle: “circle” → “square”<br><em>background swapped</em>" in html
    assert "“circle” → “cross”<br><em>cue region pasted</em>" in html
    assert '<span class="sev-badge high">high</span>' in html
    assert 'href="#trust-shortcut"' in html and 'id="finding-shortcut-intervention"' in html


def test_strip_is_skipped_without_its_records_or_arrays() -> None:
    no_records = _render(_audit(True, False), _artifacts())
    assert "decision-shortcut-chart" in no_records and "strip-tile" not in no_records
    no_arrays = _render(_audit(True, True), Artifacts())
    assert "strip-tile" not in no_arrays


@pytest.mark.parametrize("examples", [False, True])
def test_clean_page_is_calm(examples: bool) -> None:
    html = _render(_audit(False, examples), _artifacts())
    assert 'class="decision-banner pass"' in html
    assert "The evidence" not in html and "decision-shortcut-chart" not in html
    assert "No finding of high, medium or low severity." in html
    assert "For information" in html and "Accuracy is 99%." in html
