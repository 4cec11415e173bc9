"""`reporter compare` on hand-made bundles: exact numbers, matching, gates, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from reporter.cli import cli
from reporter.compare import compare, evaluate_gates, load_bundle, parse_gates
from reporter.compare.changes import changes_section
from reporter.compare.history import bundle_folders, history
from reporter.errors import ReporterError
from reporter.report.changelog import changelog_markdown
from tests.compare_bundles import make_bundle

ALL_GATES = "accuracy<-0.01, ece>+0.02, sanity:fail, shortcut:new, drift>0.3"


def _table(
    b: int, c: int, both: int = 10, neither: int = 2
) -> tuple[list[int], list[int], list[int]]:
    """Labels and old / new predictions with ``b`` right->wrong and ``c`` wrong->right images."""
    labels = [0] * (both + b + c + neither)
    old = [0] * both + [0] * b + [1] * c + [1] * neither
    new = [0] * both + [1] * b + [0] * c + [1] * neither
    return labels, old, new


def test_same_bundle_twice_is_no_change(tmp_path: Path) -> None:
    labels, old, _ = _table(0, 0)
    a = make_bundle(tmp_path / "a", labels=labels, preds=old, sanity={"gradcam": "passed"},
                    shortcut={"cat": False})  # fmt: skip
    c, arrays = compare(load_bundle(a), load_bundle(a), gates=parse_gates(ALL_GATES))
    assert c["level"] == "unchanged"
    assert not any(g["failed"] for g in c["gates"])
    assert c["drift"]["value"] == 0.0
    assert c["metrics"]["accuracy"]["delta"] == 0.0
    assert c["metrics"]["accuracy"]["mcnemar"]["p"] == 1.0
    assert c["matching"]["same_test_set"]
    assert arrays["old_maps"].shape == (6, 16, 16)


def test_accuracy_change_uses_mcnemar_on_the_known_table(tmp_path: Path) -> None:
    labels, old, new = _table(b=9, c=3)
    a = make_bundle(tmp_path / "a", labels=labels, preds=old)
    b = make_bundle(tmp_path / "b", labels=labels, preds=new)
    c, _ = compare(load_bundle(a), load_bundle(b), gates=parse_gates("accuracy<-0.1"))
    acc = c["metrics"]["accuracy"]
    n = len(labels)  # 24
    assert acc["old"] == pytest.approx(19 / n) and acc["new"] == pytest.approx(13 / n)
    assert acc["mcnemar"]["b"] == 9 and acc["mcnemar"]["c"] == 3
    # exact: 2 * P(X <= 3), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66 + 220) / 4096
    assert acc["mcnemar"]["p"] == pytest.approx(598 / 4096)
    statement = next(f for f in c["findings"] if f["id"] == "accuracy-same")["statement"]
    assert "from 79.2% to 54.2% (-25.0 points" in statement
    assert "9 images the old model got right are now wrong and 3" in statement
    assert "p = 0.146" in statement
    gate = c["gates"][0]
    assert gate["failed"] and gate["by"] == pytest.approx(0.25 - 0.1)
    assert "gate accuracy<-0.1 failed: accuracy changed by -0.2500, 0.1500 past" in gate["message"]


def test_significant_drop_regresses(tmp_path: Path) -> None:
    labels, old, new = _table(b=20, c=0)
    a = make_bundle(tmp_path / "a", labels=labels, preds=old)
    b = make_bundle(tmp_path / "b", labels=labels, preds=new)
    c, _ = compare(load_bundle(a), load_bundle(b))
    assert c["metrics"]["accuracy"]["mcnemar"]["p"] == pytest.approx(2 / 2**20)
    assert c["level"] == "regressed"
    assert c["findings"][0]["id"] == "accuracy-down"
    assert set(c["findings"][0]) == {"id", "severity", "statement", "numbers", "evidence",
                                     "recommendation"}  # fmt: skip
    recall = c["metrics"]["per_class"][0]
    assert recall["class"] == "cat" and recall["delta"] == pytest.approx(-20 / 32)
    lo, hi = recall["interval"]
    assert lo <= recall["delta"] <= hi < 0
    # 2 cats were taken for dogs before (the "neither" images): the confusion grew, it is not new
    assert c["confusion"]["shifts"] == [
        {"true": "cat", "pred": "dog", "old": 2, "new": 22, "delta": 20, "kind": "grew"}
    ]
    assert not any(f["id"] == "confusions-new" for f in c["findings"])
    labels, old, new = _table(b=20, c=0, neither=0)
    b = make_bundle(tmp_path / "b2", labels=labels, preds=new)
    c, _ = compare(load_bundle(make_bundle(tmp_path / "a2", labels=labels, preds=old)),
                   load_bundle(b))  # fmt: skip
    confusion = next(f for f in c["findings"] if f["id"] == "confusions-new")
    assert confusion["statement"] == (
        "1 confusion the old model never made now appears: \u201ccat\u201d taken for "
        "\u201cdog\u201d 20 times."
    )


def test_different_test_sets_are_matched_by_content(tmp_path: Path) -> None:
    # old: images 1..8; new: images 5..12 in reverse order (the files moved and were renamed)
    a = make_bundle(tmp_path / "a", labels=[0, 1] * 4, preds=[0, 1] * 4, hashes=list(range(1, 9)))
    new_hashes = list(range(12, 4, -1))
    labels_new = [(h + 1) % 2 for h in new_hashes]  # the same label for the same image
    preds_new = [
        1 - lab if h in (5, 6) else lab for h, lab in zip(new_hashes, labels_new, strict=True)
    ]
    b = make_bundle(tmp_path / "b", labels=labels_new, preds=preds_new, hashes=new_hashes)
    c, _ = compare(load_bundle(a), load_bundle(b), gates=parse_gates("unmatched>0.25"))
    m = c["matching"]
    assert (m["matched"], m["unmatched_old"], m["unmatched_new"], m["compared"]) == (4, 4, 4, 4)
    assert not m["same_test_set"]
    acc = c["metrics"]["accuracy"]
    assert (acc["old"], acc["new"]) == (1.0, 0.5)  # images 5 and 6 are now wrong
    finding = next(f for f in c["findings"] if f["id"] == "test-sets-differ")
    assert finding["statement"].startswith(
        "The test sets differ: 4 images are in both (matched by content); 4 of the old audit's 8 "
        "and 4 of the new audit's 8 are in one only."
    )
    assert c["gates"][0]["failed"] and c["gates"][0]["value"] == 0.5


def test_audits_sharing_no_image(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", labels=[0, 1], preds=[0, 1], hashes=[1, 2])
    b = make_bundle(tmp_path / "b", labels=[0, 1], preds=[0, 0], hashes=[3, 4])
    c, arrays = compare(load_bundle(a), load_bundle(b), gates=parse_gates("accuracy<0, drift>0"))
    assert c["matching"]["compared"] == 0 and arrays == {}
    assert c["metrics"]["accuracy"]["delta"] is None
    assert c["drift"]["unavailable"] == "no shared image kept its prediction"
    # nothing could be compared: a reviewer must look, but nothing is known to have regressed
    assert c["findings"][0]["id"] == "test-sets-differ" and c["level"] == "review"
    assert [g["message"] for g in c["gates"]] == [
        "gate accuracy<0 failed: it cannot be measured (accuracy is undefined in one audit).",
        "gate drift>0 failed: it cannot be measured (no shared image kept its prediction).",
    ]


def test_different_classes_are_said_and_compared_by_name(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", labels=[0, 1, 0, 1], preds=[0, 1, 0, 1],
                    classes=("cat", "dog"))  # fmt: skip
    # the new model has a third class and another order: dog = 0, cat = 2
    b = make_bundle(tmp_path / "b", labels=[2, 0, 2, 0], preds=[2, 0, 1, 0],
                    classes=("dog", "frog", "cat"))  # fmt: skip
    c, _ = compare(load_bundle(a), load_bundle(b))
    assert c["classes"]["shared"] == ["dog", "cat"] and c["classes"]["only_new"] == ["frog"]
    assert c["metrics"]["accuracy"]["new"] == 0.75
    per = {r["class"]: r for r in c["metrics"]["per_class"]}
    assert per["cat"]["new"] == 0.5 and per["dog"]["new"] == 1.0
    f = next(f for f in c["findings"] if f["id"] == "classes-differ")
    assert "(2 before, 3 now: \u201cfrog\u201d only in the new one)" in f["statement"]


def test_shortcut_and_sanity_gates(tmp_path: Path) -> None:
    labels, old, _ = _table(0, 0)
    a = make_bundle(tmp_path / "a", labels=labels, preds=old, verdict="review",
                    shortcut={"cat": False, "dog": True}, sanity={"gradcam": "passed"})  # fmt: skip
    b = make_bundle(tmp_path / "b", labels=labels, preds=old, verdict="fail",
                    shortcut={"cat": True, "dog": True}, sanity={"gradcam": "failed"})  # fmt: skip
    gates = parse_gates("shortcut:new, sanity:fail, verdict:worse, shortcut:any")
    c, _ = compare(load_bundle(a), load_bundle(b), gates=gates)
    results = {g["gate"]: g for g in c["gates"]}
    assert results["shortcut:new"]["value"] == ["cat"]
    assert results["sanity:fail"]["value"] == ["gradcam"]
    assert results["verdict:worse"]["value"] == ["review -> fail"]
    assert results["shortcut:any"]["value"] == ["cat", "dog"]
    assert c["level"] == "regressed"
    # the same shortcut in both audits is not new
    c2, _ = compare(load_bundle(b), load_bundle(b), gates=parse_gates("shortcut:new"))
    assert not c2["gates"][0]["failed"]


def test_drift_on_unchanged_predictions(tmp_path: Path) -> None:
    grid = np.arange(256, dtype=np.float32).reshape(16, 16) / 255
    old_maps = np.broadcast_to(grid, (4, 1, 16, 16)).copy()
    new_maps = old_maps.copy()
    new_maps[:2] = grid[::-1, ::-1]  # two images: the ranking is reversed (rho = -1)
    a = make_bundle(tmp_path / "a", labels=[0, 1, 0, 1], preds=[0, 1, 0, 1], maps=old_maps)
    b = make_bundle(tmp_path / "b", labels=[0, 1, 0, 1], preds=[0, 1, 0, 0], maps=new_maps)
    c, arrays = compare(load_bundle(a), load_bundle(b), gates=parse_gates("drift>0.3"))
    d = c["drift"]
    assert c["drift"]["stable_images"] == 3  # image 4 changed its prediction: left out
    # rho = [-1, -1, 1]: median -1, drift 2
    assert d["methods"]["gradcam"]["median"] == pytest.approx(-1.0)
    assert d["value"] == pytest.approx(2.0)
    assert [m["index_new"] for m in d["most_moved"]] == [0, 1, 2]
    assert np.array_equal(arrays["new_maps"][0], new_maps[0, 0].astype(np.float16))
    assert c["gates"][0]["failed"]
    # one image changed its prediction (McNemar p = 1): the maps moved, accuracy did not
    finding = next(f for f in c["findings"] if f["evidence"]["anchor"] == "drift")
    assert finding["id"] == "right-for-new-reasons" and finding["severity"] == "medium"
    assert finding["statement"] == (
        "On the 3 images whose prediction did not change, the gradcam maps of the two models "
        "have a median rank correlation of -1.00 (drift 2.00), while accuracy did not change "
        "significantly: the model is right for new reasons."
    )


def test_drift_of_one_class_is_said(tmp_path: Path) -> None:
    grid = np.arange(256, dtype=np.float32).reshape(16, 16) / 255
    old_maps = np.broadcast_to(grid, (6, 1, 16, 16)).copy()
    new_maps = old_maps.copy()
    new_maps[[4, 5]] = grid[::-1, ::-1]  # both dog maps reversed, no cat map
    labels = [0, 0, 0, 0, 1, 1]
    a = make_bundle(tmp_path / "a", labels=labels, preds=labels, maps=old_maps)
    b = make_bundle(tmp_path / "b", labels=labels, preds=labels, maps=new_maps)
    c, _ = compare(load_bundle(a), load_bundle(b))
    per = c["drift"]["methods"]["gradcam"]["per_class"]
    assert per["cat"]["median"] == pytest.approx(1.0) and per["dog"]["median"] == pytest.approx(
        -1.0
    )
    assert c["drift"]["value"] == pytest.approx(0.0)  # the median image did not move
    finding = next(f for f in c["findings"] if f["evidence"]["anchor"] == "drift")
    assert finding["id"] == "drift-class" and finding["numbers"]["classes"] == ["dog"]
    assert (
        "but for 1 class the maps moved (median rank correlation \u201cdog\u201d -1.00)"
        in (finding["statement"])
    )


def test_record_findings_and_signoff_report_id(tmp_path: Path) -> None:
    record = {"id": "x", "severity": "high", "statement": "S.", "numbers": {},
              "evidence": {"anchor": "a", "label": "A"}, "recommendation": "R."}  # fmt: skip
    a = make_bundle(tmp_path / "a", labels=[0, 1], preds=[0, 1])
    b = make_bundle(tmp_path / "b", labels=[0, 1], preds=[0, 1], schema_version=3,
                    findings=[record], extra={"signoff": {"report_id": "rid-123"}})  # fmt: skip
    old, new = load_bundle(a), load_bundle(b)
    assert new.report_id == "rid-123"
    import hashlib

    assert old.report_id == hashlib.sha256((a / "audit.json").read_bytes()).hexdigest()
    c, _ = compare(old, new)
    assert c["new"]["report_id"] == "rid-123"


@pytest.mark.parametrize(
    ("expression", "token"),
    [
        ("acc<-0.01", "'acc'"),
        ("accuracy=>1", "unknown operator '='"),
        ("accuracy 0.1", "'0.1'"),
        ("accuracy<x", "'x'"),
        ("sanity:maybe", "'maybe'"),
        ("trust:new", "'trust'"),
        ("accuracy<1,,ece>1", "an empty gate"),
        ("drift==0.3", "'=='"),
    ],
)
def test_gate_parse_errors_name_the_token_and_the_metrics(expression: str, token: str) -> None:
    with pytest.raises(ReporterError) as info:
        parse_gates(expression)
    message = str(info.value)
    assert token in message and "\n" not in message
    assert "valid metrics: accuracy, macro_f1, ece, recall, drift, unmatched" in message


def test_gate_numbers_and_percentages() -> None:
    gates = parse_gates(" accuracy < -1% ,ece>=+0.02,recall<=-.05 ")
    assert [(g.name, g.op, g.limit) for g in gates] == [
        ("accuracy", "<", -0.01), ("ece", ">=", 0.02), ("recall", "<=", -0.05)]  # fmt: skip


def test_unmeasurable_gate_fails(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", labels=[0, 1], preds=[0, 1], methods=("gradcam",))
    b = make_bundle(tmp_path / "b", labels=[0, 1], preds=[0, 1], methods=("eigencam",))
    c, _ = compare(load_bundle(a), load_bundle(b))
    out = evaluate_gates(c, parse_gates("drift>0.3"))
    assert out[0]["failed"]
    assert out[0]["message"] == (
        "gate drift>0.3 failed: it cannot be measured (no method is audited in both)."
    )


def test_cli_exit_codes_and_outputs(tmp_path: Path) -> None:
    labels, old, new = _table(b=20, c=0)
    a = make_bundle(tmp_path / "a", labels=labels, preds=old)
    b = make_bundle(tmp_path / "b", labels=labels, preds=new)
    run = CliRunner()
    out = tmp_path / "cmp"
    ok = run.invoke(cli, ["compare", str(a), str(a), "--out", str(out), "--format", "html,json",
                          "--fail-on", ALL_GATES])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "gate shortcut:new passed." in ok.output
    bad = run.invoke(cli, ["compare", str(a), str(b), "--out", str(out), "--format", "html,json",
                           "--fail-on", "accuracy<-0.01, ece>+0.9"])  # fmt: skip
    assert bad.exit_code == 1
    assert "gate accuracy<-0.01 failed: accuracy changed by -0.6250, 0.6150 past" in bad.output
    assert "1 of 2 gates failed." in bad.output
    data = json.loads((out / "compare.json").read_text())
    assert data["level"] == "regressed" and data["gates"][0]["failed"]
    html = (out / "report.html").read_text()
    assert "Comparison: regressed" in html and "gate accuracy&lt;-0.01 failed" in html
    assert (out / "artifacts" / "moved.npz").is_file()
    parse = run.invoke(cli, ["compare", str(a), str(b), "--out", str(tmp_path / "x"),
                             "--fail-on", "acuracy<0"])  # fmt: skip
    assert parse.exit_code == 2
    assert parse.output.startswith("Error: --fail-on: unknown metric 'acuracy'")
    assert len(parse.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    into = run.invoke(cli, ["compare", str(a), str(b), "--out", str(a)])
    assert into.exit_code == 2 and "holds an audit bundle" in into.output
    assert (a / "artifacts" / "records.npz").is_file()
    missing = run.invoke(cli, ["compare", str(a), str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "is not an audit bundle" in missing.output


def test_cli_refuses_a_bundle_of_another_schema(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", labels=[0, 1], preds=[0, 1], schema_version=1)
    b = make_bundle(tmp_path / "b", labels=[0, 1], preds=[0, 1])
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "has schema_version 1; comparisons read versions 2 to" in result.output


def test_changelog_is_carried_from_audit_to_audit(tmp_path: Path) -> None:
    days = ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]
    labels, old, new = _table(b=2, c=0)
    one = load_bundle(make_bundle(tmp_path / "1", labels=labels, preds=old, generated=days[0]))
    two = load_bundle(make_bundle(tmp_path / "2", labels=labels, preds=old, generated=days[1]))
    two.audit["changes"] = changes_section(one, two)
    (tmp_path / "2" / "audit.json").write_text(json.dumps(two.audit))
    two = load_bundle(tmp_path / "2")
    three = load_bundle(make_bundle(tmp_path / "3", labels=labels, preds=new, generated=days[2]))
    changes = changes_section(two, three)
    log = changes["changelog"]
    assert [e["generated"] for e in log] == days
    assert [e["report_id"] for e in log] == [one.report_id, two.report_id, None]
    assert log[0]["changes"] is None
    assert log[2]["changes"] == (
        # 14 images, 12 then 10 right, all at confidence 0.9: ECE |0.9 - 12/14|, |0.9 - 10/14|
        "Accuracy 85.7% \u2192 71.4% (-14.3 points, p = 0.500); ECE 0.043 \u2192 0.186; drift "
        "0.00 (gradcam); verdict pass \u2192 pass; 14 shared images."
    )
    lines = changelog_markdown({"changes": changes})
    table = [line for line in lines if line.startswith("| 2026")]
    assert [row.split(" | ")[0] for row in table] == [f"| {d}" for d in reversed(days)]
    assert "this report" in table[0] and f"`{one.report_id[:12]}`" in table[2]


def test_history_in_date_order(tmp_path: Path) -> None:
    labels, old, new = _table(b=2, c=0)
    make_bundle(tmp_path / "r" / "b", labels=labels, preds=new,
                generated="2026-02-01T00:00:00+00:00")  # fmt: skip
    make_bundle(tmp_path / "r" / "a", labels=labels, preds=old,
                generated="2026-01-01T00:00:00+00:00")  # fmt: skip
    (tmp_path / "r" / "notes").mkdir()
    h = history(bundle_folders([str(tmp_path / "r" / "*")]))
    assert [r["date"] for r in h["rows"]] == ["2026-01-01", "2026-02-01"]
    assert h["rows"][0]["drift"] is None and h["rows"][1]["drift"] == 0.0
    assert h["rows"][1]["accuracy"] == pytest.approx(10 / 14)
    assert [s["path"] for s in h["skipped"]] == [str((tmp_path / "r" / "notes").resolve())]
    result = CliRunner().invoke(cli, ["history", str(tmp_path / "r"), "--out",
                                      str(tmp_path / "h"), "--format", "html,json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Traced 2 audits (2026-01-01 to 2026-02-01)" in result.output
    assert "2 audits" in (tmp_path / "h" / "history.html").read_text()
    none = CliRunner().invoke(cli, ["history", str(tmp_path / "nothing*")])
    assert none.exit_code == 2 and "no such folder" in none.output


def test_user_templates_render_sandboxed(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", labels=[0, 1], preds=[0, 1])
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "compare.html").write_text("{{ c.level }} {{ c.__class__ }}")
    result = CliRunner().invoke(cli, ["compare", str(a), str(a), "--out", str(tmp_path / "o"),
                                      "--template-dir", str(theme)])  # fmt: skip
    assert result.exit_code == 2
    assert "tried something templates may not do" in result.output
    assert not (tmp_path / "o").exists()
    (theme / "compare.html").write_text("{{ c.level }}: {{ 1 / 0 }}")
    result = CliRunner().invoke(cli, ["compare", str(a), str(a), "--out", str(tmp_path / "o"),
                                      "--template-dir", str(theme)])  # fmt: skip
    assert result.exit_code == 2 and "ZeroDivisionError" in result.output
    (theme / "compare.html").write_text("<p>{{ c.level }}</p>")
    args = ["compare", str(a), str(a), "--out", str(tmp_path / "o"), "--format", "html"]
    result = CliRunner().invoke(cli, [*args, "--template-dir", str(theme)])
    assert result.exit_code == 0
    assert (tmp_path / "o" / "report.html").read_text() == "<p>unchanged</p>"


def test_trust_checks_on_different_numbers_of_images_are_said(tmp_path: Path) -> None:
    labels, old, _ = _table(0, 0)

    def counts(sanity: int, faithfulness: int, region: int) -> dict:
        return {
            "sanity_images": sanity,
            "faithfulness": {"images": faithfulness},
            "shortcut_rules": {"region_images": region},
        }

    a = make_bundle(tmp_path / "a", labels=labels, preds=old, sanity={"gradcam": "passed"})
    b = make_bundle(tmp_path / "b", labels=labels, preds=old, sanity={"gradcam": "inconclusive"})
    for folder, trust in ((a, counts(24, 32, 96)), (b, counts(8, 32, 40))):
        audit = json.loads((folder / "audit.json").read_text())
        audit["trust"].update(trust)
        (folder / "audit.json").write_text(json.dumps(audit))
    c, _ = compare(load_bundle(a), load_bundle(b))
    assert c["trust"]["images"]["differ"] == ["sanity", "region"]
    found = next(f for f in c["findings"] if f["id"] == "trust-images-differ")
    assert found["statement"] == (
        "The two audits ran their trust checks on different numbers of images (randomization "
        "test 24 → 8, region search 96 → 40): a status or flag that changed may come from the "
        "sample size (and its interval) rather than from the model."
    )
    assert found["numbers"] == {
        "old": {"sanity": 24, "region": 96},
        "new": {"sanity": 8, "region": 40},
    }
    # the same counts, or counts an older bundle does not record: nothing said
    c2, _ = compare(load_bundle(a), load_bundle(a))
    assert c2["trust"]["images"]["differ"] == []
    assert not [f for f in c2["findings"] if f["id"] == "trust-images-differ"]
