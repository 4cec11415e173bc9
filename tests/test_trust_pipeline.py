"""The trust stage inside `reporter audit`: masks from a folder, shapes masks, report content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from reporter.cli import cli
from tests.conftest import make_image_folder

FAST = [
    "--featvis-channels",
    "0",
    "--samples-per-class",
    "1",
    "--quiet",
    "--methods",
    "gradcam,eigencam",
    "--epochs",
    "1",
    "--input-size",
    "16",
]


def _masks_like(images: Path, masks: Path) -> None:
    """The object of class i is the bright quadrant written by make_image_folder."""
    for ci, folder in enumerate(sorted(p for p in images.iterdir() if p.is_dir())):
        (masks / folder.name).mkdir(parents=True)
        size = 20
        q = size // 2
        r, c = divmod(ci % 4, 2)
        arr = np.zeros((size, size), dtype=np.uint8)
        arr[r * q : (r + 1) * q, c * q : (c + 1) * q] = 255
        for img in folder.iterdir():
            Image.fromarray(arr).save(masks / folder.name / (img.stem + ".png"))


def test_masks_folder_gives_localization_and_records_missing(tmp_path: Path) -> None:
    images = make_image_folder(tmp_path / "images", {"a": 12, "b": 12})
    masks = tmp_path / "masks"
    _masks_like(images, masks)
    missing = next((masks / "a").iterdir())
    missing.unlink()
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "--data",
            str(images),
            "--split",
            "all",
            "--masks",
            str(masks),
            "--out",
            str(out),
            "--format",
            "json,html",
            "--cache-dir",
            str(tmp_path / "c"),
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text())
    trust = audit["trust"]
    assert set(trust["sanity"]) == {"gradcam", "eigencam"}
    statuses = {v["status"] for v in trust["sanity"].values()}
    assert statuses <= {"passed", "inconclusive", "failed"}
    assert all(len(v["layers"]) == len(trust["layers"]) for v in trust["sanity"].values())
    loc = trust["localization"]
    assert loc is not None and 0 <= loc["methods"]["gradcam"]["energy_inside"] <= 1
    assert abs(loc["object_area"] - 0.25) < 0.05
    if any(
        m["path"].endswith(missing.stem) or missing.stem in m["path"]
        for m in trust.get("missing_masks", [])
    ):
        assert loc["images"] < trust["sample"]
    assert all(isinstance(v["flagged"], bool) for v in trust["shortcut"].values())
    html = (out / "report.html").read_text()
    assert "Can the explanations be trusted?" in html and "Localization against object" in html


def test_shapes_audit_has_masks_and_shortcut_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "--data",
            "shapes-spurious",
            "--spurious",
            "0.9",
            "--max-images",
            "40",
            "--out",
            str(out),
            "--format",
            "json",
            "--cache-dir",
            str(tmp_path / "c"),
            "--trust-samples",
            "40",
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit.json").read_text())
    check = audit["dataset"]["shortcut_check"]
    assert 0 <= check["accuracy_shortcut_absent"] <= 1 and check["spurious"] == 0.9
    assert audit["trust"]["localization"]["methods"]["gradcam"]["pointing_game"] >= 0
    assert audit["trust"]["shortcut"][audit["dataset"]["classes"][0]]["basis"] == "mask"
