"""`reporter audit` end to end on small slices: files, PDF text, embedding, escaping, atomicity."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from reporter.cli import cli
from tests.conftest import folder_snapshot, make_image_folder

FAST = [
    "--max-images",
    "30",
    "--featvis-steps",
    "4",
    "--featvis-channels",
    "2",
    "--samples-per-class",
    "1",
    "--methods",
    "gradcam,eigencam",
    "--quiet",
]


def _audit(*args: str) -> object:
    return CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory, digits_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    result = _audit(
        "--model",
        str(digits_checkpoint),
        "--data",
        "digits",
        "--out",
        str(out),
        "--format",
        "html,pdf,json,modelcard",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output
    return out


def test_all_files_written(full_report: Path) -> None:
    for name in ("report.html", "report.pdf", "audit.json", "audit.toml", "MODEL_CARD.md"):
        assert (full_report / name).stat().st_size > 0, name
    assert not [p for p in full_report.parent.iterdir() if ".partial-" in p.name]


def test_audit_json_contract(full_report: Path) -> None:
    audit = json.loads((full_report / "audit.json").read_text())
    for key in (
        "schema_version",
        "model",
        "dataset",
        "metrics",
        "explanations",
        "featvis",
        "trust",
        "findings",
        "skipped",
        "timings",
        "environment",
    ):
        assert key in audit, key
    assert 0.0 <= audit["metrics"]["accuracy"] <= 1.0
    assert audit["dataset"]["audited_images"] == 30
    assert all(isinstance(f["statement"], str) and f["statement"] for f in audit["findings"])
    assert audit["verdict"]["level"] in ("pass", "review", "fail")
    assert audit["signoff"]["status"] == audit["verdict"]["level"]
    assert [m["name"] for m in audit["explanations"]["methods"]] == ["gradcam", "eigencam"]
    assert audit["explanations"]["layers"] == ["features.relu4"]
    assert isinstance(audit["skipped"], list)
    assert len(audit["model"]["sha256"]) == 64


def test_pdf_has_sections_and_page_numbers(full_report: Path) -> None:
    reader = PdfReader(full_report / "report.pdf")
    text = "\n".join(page.extract_text() for page in reader.pages)
    n = len(reader.pages)
    for title in (
        "Key findings",
        "Contents",
        "Performance",
        "Explanation methods",
        "Galleries by class",
        "Where each class looks",
        "Learned features",
        "Appendix",
    ):
        assert title in text, title
    assert f"Page 1 of {n}" in text and f"Page {n} of {n}" in text
    assert reader.pages[0].mediabox.width == pytest.approx(595.3, abs=1)  # A4


def test_html_is_self_contained(full_report: Path) -> None:
    html = (full_report / "report.html").read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) > 20
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in html and "http://" not in html and "https://" not in html


def test_model_card_from_the_same_numbers(full_report: Path) -> None:
    audit = json.loads((full_report / "audit.json").read_text())
    card = (full_report / "MODEL_CARD.md").read_text()
    assert f"| accuracy | {audit['metrics']['accuracy']:.4f} |" in card
    assert card.startswith("---\nlibrary_name: pytorch")


def test_class_names_with_markup_are_escaped(tmp_path: Path) -> None:
    evil = "<b onclick=alert(1)>x"
    data = make_image_folder(tmp_path / "data", {evil: 10, "plain": 10})
    out = tmp_path / "out"
    result = _audit(
        "--data",
        str(data),
        "--epochs",
        "1",
        "--input-size",
        "16",
        "--out",
        str(out),
        "--format",
        "html,json",
        "--cache-dir",
        str(tmp_path / "cache"),
        *FAST,
    )
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert evil not in html
    assert "&lt;b onclick=alert(1)&gt;x" in html
    assert evil in json.loads((out / "audit.json").read_text())["dataset"]["classes"]


def test_failed_pdf_stage_keeps_previous_report(
    tmp_path: Path, digits_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    args = [
        "--model",
        str(digits_checkpoint),
        "--out",
        str(out),
        "--format",
        "html,pdf,json",
        *FAST,
    ]
    assert _audit(*args).exit_code == 0
    before = folder_snapshot(out)

    import reporter.report.writer as writer

    def boom(*_a, **_k):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(writer, "render_pdf", boom)
    result = CliRunner().invoke(cli, ["audit", *args, "--seed", "1"])
    assert result.exit_code != 0
    after = folder_snapshot(out)
    assert after == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_config_file_and_flag_override(tmp_path: Path, digits_checkpoint: Path) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(
        f'model = "{digits_checkpoint}"\nmethods = ["gradcam"]\nmax_images = 20\n'
        'featvis_channels = 0\nsamples_per_class = 1\nformats = ["json"]\nquiet = true\n'
        '[model_card]\nowners = ["ML platform team"]\nintended_use = "Demo only."\n'
    )
    out = tmp_path / "out"
    result = _audit("--config", str(config), "--methods", "eigencam", "--out", str(out))
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text())
    assert [m["name"] for m in audit["explanations"]["methods"]] == ["eigencam"]
    assert audit["dataset"]["audited_images"] == 20
    assert audit["model_card"]["owners"] == ["ML platform team"]
    effective = tomllib.loads((out / "audit.toml").read_text())
    assert effective["methods"] == ["eigencam"] and effective["max_images"] == 20
    assert not (out / "report.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "gradcam,nope"], "Unknown method 'nope'"),
        (["--format", "docx"], "Unknown format 'docx'"),
        (["--colormap", "jett"], "Unknown colormap"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_unknown_config_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("methodz = ['gradcam']\n")
    result = CliRunner().invoke(cli, ["audit", "--config", str(config)])
    assert result.exit_code == 2 and "did you mean methods" in result.output.lower()
