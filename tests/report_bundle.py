"""A small audited bundle with its report.html and report.pdf, shared by the document tests
(test_pdf_layout, test_browser): a model trained by the run on a tiny image folder whose class
names need escaping in ids ("dog face", "Frog")."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from reporter.cli import cli
from tests.conftest import make_image_folder

CLASSES = {"cat": 6, "dog face": 6, "Frog": 6}


def audit_small_bundle(root: Path, formats: str = "html,pdf,json") -> Path:
    """Audit a tiny folder into ``root/out`` and return that folder."""
    data = make_image_folder(root / "data", CLASSES, size=16)
    out = root / "out"
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "--data",
            str(data),
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache"),
            "--format",
            formats,
            "--featvis-steps",
            "4",
            "--featvis-channels",
            "2",
            "--samples-per-class",
            "2",
            "--trust-samples",
            "8",
            "--methods",
            "gradcam,layercam,eigencam",
            "--epochs",
            "1",
            "--input-size",
            "16",
            "--quiet",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out
