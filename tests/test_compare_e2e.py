"""`reporter compare` and `reporter audit --previous` on real (tiny) audits, the example
bundles, and the nightly job of docs/scheduling.rst run as written."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from reporter.bundle import report_id
from reporter.cli import cli
from tests.conftest import make_image_folder
from tests.test_docs import code_blocks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_reports"
ALL_GATES = "accuracy<-0.01, ece>+0.02, sanity:fail, shortcut:new, drift>0.3"
FAST = [
    "--featvis-channels",
    "0",
    "--samples-per-class",
    "1",
    "--trust-samples",
    "0",
    "--methods",
    "gradcam,eigencam",
    "--input-size",
    "16",
    "--batch-size",
    "8",
    "--quiet",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three audits of a folder: one epoch, the same model again (--previous the first), and
    the model trained four epochs (--previous the second)."""
    root = tmp_path_factory.mktemp("compare-e2e")
    data = make_image_folder(root / "data", {"cat": 30, "dog": 30, "frog": 30}, size=16)
    common = ["--data", str(data), "--cache-dir", str(root / "cache"), *FAST]
    plan = {
        "one": ["--epochs", "1", "--format", "json,modelcard"],
        "same": ["--epochs", "1", "--format", "json,modelcard", "--previous", str(root / "one")],
        "more": [
            "--epochs",
            "4",
            "--format",
            "json,modelcard,html",
            "--previous",
            str(root / "same"),
        ],
    }
    for name, extra in plan.items():
        result = CliRunner().invoke(
            cli, ["audit", "--out", str(root / name), *common, *extra], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
    return {"root": root, "data": data, **{name: root / name for name in plan}}


def _compare(old: Path, new: Path, out: Path, gates: str) -> tuple[int, str, dict]:
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            str(old),
            str(new),
            "--out",
            str(out),
            "--format",
            "json",
            "--fail-on",
            gates,
        ],
    )
    data = (
        json.loads((out / "compare.json").read_text()) if (out / "compare.json").is_file() else {}
    )
    return result.exit_code, result.output, data


def _records(bundle: Path) -> dict[str, np.ndarray]:
    with np.load(bundle / "artifacts" / "records.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_the_same_model_twice_is_no_change(runs: dict[str, Path], tmp_path: Path) -> None:
    code, output, c = _compare(runs["one"], runs["same"], tmp_path / "c", ALL_GATES)
    assert code == 0, output
    assert not any(g["failed"] for g in c["gates"]) and len(c["gates"]) == 5
    assert c["level"] == "unchanged"
    assert c["drift"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert c["metrics"]["accuracy"]["delta"] == 0.0
    assert c["metrics"]["accuracy"]["mcnemar"]["b"] == c["metrics"]["accuracy"]["mcnemar"]["c"] == 0
    assert c["matching"]["same_test_set"]


def test_more_epochs_shows_its_real_deltas(runs: dict[str, Path], tmp_path: Path) -> None:
    old = json.loads((runs["one"] / "audit.json").read_text())
    new = json.loads((runs["more"] / "audit.json").read_text())
    assert old["model"]["sha256"] != new["model"]["sha256"]
    code, output, c = _compare(runs["one"], runs["more"], tmp_path / "c", "accuracy<-0.01")
    acc = c["metrics"]["accuracy"]
    # the same test images: the paired numbers are each audit's own numbers
    assert acc["old"] == pytest.approx(old["metrics"]["accuracy"])
    assert acc["new"] == pytest.approx(new["metrics"]["accuracy"])
    assert c["metrics"]["ece"]["old"] == pytest.approx(old["metrics"]["ece"])
    assert c["metrics"]["ece"]["new"] == pytest.approx(new["metrics"]["ece"])
    for row, before, after in zip(c["metrics"]["per_class"], old["metrics"]["per_class"],
                                  new["metrics"]["per_class"], strict=True):  # fmt: skip
        assert (row["old"], row["new"]) == (pytest.approx(before["recall"]),
                                            pytest.approx(after["recall"]))  # fmt: skip
    # McNemar's table, counted from the records by hand
    ro, rn = _records(runs["one"]), _records(runs["more"])
    assert np.array_equal(ro["hash"], rn["hash"])
    right_o, right_n = ro["pred"] == ro["label"], rn["pred"] == rn["label"]
    assert acc["mcnemar"]["b"] == int((right_o & ~right_n).sum())
    assert acc["mcnemar"]["c"] == int((~right_o & right_n).sum())
    assert code == (1 if acc["delta"] < -0.01 else 0), output
    assert f"accuracy changed by {acc['delta']:+.4f}" in output


def test_a_shortcut_introduced_fails_the_gate(tmp_path: Path) -> None:
    clean, shortcut = EXAMPLES / "shapes-clean", EXAMPLES / "shapes-shortcut"
    code, output, c = _compare(clean, shortcut, tmp_path / "c", "shortcut:new")
    assert code == 1
    flagged = [s["class"] for s in c["trust"]["shortcut"] if s["new"] and not s["old"]]
    assert flagged and f"gate shortcut:new failed: a class is newly flagged as a shortcut " \
        f"({', '.join(flagged)})." in output  # fmt: skip
    assert c["level"] == "regressed"
    back, output, _ = _compare(shortcut, clean, tmp_path / "back", "shortcut:new")
    assert back == 0, output


def test_previous_carries_the_changes_and_the_changelog(runs: dict[str, Path]) -> None:
    same = json.loads((runs["same"] / "audit.json").read_text())
    one = json.loads((runs["one"] / "audit.json").read_text())
    one_id = one["signoff"]["report_id"]  # the report id of the sign-off block (schema 3)
    assert one_id == report_id(one)
    assert same["changes"]["previous"]["report_id"] == one_id
    assert same["changes"]["level"] == "unchanged"
    more = json.loads((runs["more"] / "audit.json").read_text())
    same_id = same["signoff"]["report_id"]
    assert same_id == report_id(same)  # recomputed over the changes too
    log = more["changes"]["changelog"]
    assert [e["report_id"] for e in log] == [one_id, same_id, None]
    assert log[-1]["changes"] == more["changes"]["summary"]
    card = (runs["more"] / "MODEL_CARD.md").read_text()
    rows = [line for line in card.splitlines() if line.startswith("| 20")]
    assert len(rows) == 3 and "this report" in rows[0] and f"`{one_id[:12]}`" in rows[2]
    assert "## Changes since the last audit" in card
    html = (runs["more"] / "report.html").read_text()
    assert f"Changes since the last audit: {more['changes']['level']}" in html


def test_a_bad_previous_is_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["audit", "--previous", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {tmp_path} is not an audit bundle")
    assert not out.exists()


def _doc_block(name: str):
    blocks = [b for b in code_blocks(ROOT / "docs" / "scheduling.rst")
              if b.options.get("name") == name]  # fmt: skip
    assert len(blocks) == 1, name
    return blocks[0]


def test_the_ci_examples_run_the_nightly_script() -> None:
    github = yaml.safe_load(_doc_block("github-actions").code)
    steps = github["jobs"]["audit"]["steps"]
    assert any(s.get("run") == "bash scripts/nightly.sh" for s in steps)
    assert github[True]["schedule"][0]["cron"] == "0 3 * * *"  # YAML 1.1 reads `on` as True
    gitlab = yaml.safe_load(_doc_block("gitlab-ci").code)
    assert "bash scripts/nightly.sh" in gitlab["nightly-audit"]["script"]
    text = (ROOT / "docs" / "scheduling.rst").read_text()
    assert (
        "0 3 * * *  cd /srv/pets && PATH=/srv/pets/.venv/bin:$PATH bash scripts/nightly.sh" in text
    )


def test_the_nightly_job_of_the_docs_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    """Two nights of scripts/nightly.sh as printed: the second compares with the first."""
    ws = tmp_path / "ws"
    (ws / "scripts").mkdir(parents=True)
    (ws / "scripts" / "nightly.sh").write_text(_doc_block("nightly-sh").code)
    (ws / "audit.toml").write_text(
        f'data = "{runs["data"]}"\ncache_dir = "{runs["root"] / "cache"}"\nepochs = 1\n'
        'input_size = 16\nbatch_size = 8\nmethods = ["gradcam"]\nfeatvis_channels = 0\n'
        'samples_per_class = 1\ntrust_samples = 0\nformats = ["json", "modelcard"]\n'
        "quiet = true\n"
    )
    shim = ws / "bin" / "reporter"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m reporter "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    for night in ("2026-01-01", "2026-01-02"):
        night_env = {**env, "RUN_DATE": night}
        done = subprocess.run(["bash", "scripts/nightly.sh"], cwd=ws, env=night_env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert os.readlink(ws / "reports" / "latest") == night
    second = ws / "reports" / "2026-01-02"
    c = json.loads((second / "compare" / "compare.json").read_text())
    assert [g["failed"] for g in c["gates"]] == [False] * 5
    assert c["old"]["path"].endswith("reports/latest")
    assert "gate shortcut:new passed." in done.stdout
    card = (second / "MODEL_CARD.md").read_text()
    assert len([line for line in card.splitlines() if line.startswith("| 2026")]) == 2
    history = json.loads((ws / "reports" / "history" / "history.json").read_text())
    assert len(history["rows"]) == 2 and history["rows"][1]["drift"] == pytest.approx(0.0)
    assert (ws / "reports" / "history" / "history.pdf").is_file()
