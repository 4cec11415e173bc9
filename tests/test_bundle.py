"""The bundle: audit.json + artifacts/ written by `reporter audit`, rendered again by
`reporter render` without the model, the data or autograd."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from reporter.bundle import SCHEMA_VERSION, Artifacts, read_bundle, to_json, write_bundle
from reporter.cli import cli
from reporter.errors import ReporterError
from tests.conftest import folder_snapshot, make_image_folder

FAST = [
    "--featvis-steps",
    "4",
    "--featvis-channels",
    "2",
    "--samples-per-class",
    "1",
    "--trust-samples",
    "8",
    "--methods",
    "gradcam,eigencam",
    "--epochs",
    "1",
    "--input-size",
    "16",
    "--quiet",
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An audit of a model trained by the run on a folder; then the data and model are deleted."""
    root = tmp_path_factory.mktemp("bundle")
    data = make_image_folder(root / "data", {"cat": 6, "dog": 6, "frog": 6}, size=16)
    cache = root / "cache"
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
            str(cache),
            "--format",
            "html,pdf,json,modelcard",
            *FAST,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    shutil.rmtree(data)
    shutil.rmtree(cache)
    return out


def test_bundle_holds_json_and_artifacts(bundle: Path) -> None:
    audit, artifacts = read_bundle(bundle)
    assert audit["schema_version"] == SCHEMA_VERSION
    files = {e["file"] for e in audit["artifacts"]}
    assert {
        "artifacts/records.npz",
        "artifacts/galleries.npz",
        "artifacts/class_average.npz",
        "artifacts/featvis.npz",
        "artifacts/trust.npz",
    } <= files | {"artifacts/trust.npz"}
    n = audit["dataset"]["audited_images"]
    records = artifacts.group("records")
    assert records["maps"].shape == (n, 2, 16, 16)
    assert records["maps"].dtype == np.float16
    assert records["hash"].dtype == np.uint64 and len(set(records["hash"].tolist())) == n
    assert (records["pred"] == records["pred"]).all() and len(records["label"]) == n
    assert audit["explanations"]["record_layer"] == audit["explanations"]["layers"][0]
    gallery = artifacts.group("galleries")
    assert gallery["images"].dtype == np.uint8 and gallery["images"].shape[-1] == 3
    assert gallery["maps"].shape[:2] == (2, len(gallery["images"]))
    assert "rendering" in audit and "render" not in audit["timings"]


def test_render_again_without_model_or_data_is_identical(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-rendering needs no model, no data and no autograd, and gives the same HTML."""

    def forbidden(*_a, **_k):
        raise AssertionError("the report ran a model or autograd")

    monkeypatch.setattr(torch.nn.Module, "__call__", forbidden)
    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    other = tmp_path / "again"
    result = CliRunner().invoke(
        cli, ["render", str(bundle), "--out", str(other), "--format", "html,modelcard"]
    )
    assert result.exit_code == 0, result.output
    assert (other / "report.html").read_bytes() == (bundle / "report.html").read_bytes()
    assert (other / "MODEL_CARD.md").read_bytes() == (bundle / "MODEL_CARD.md").read_bytes()
    assert (other / "audit.json").read_bytes() == (bundle / "audit.json").read_bytes()
    assert folder_snapshot(other / "artifacts") == folder_snapshot(bundle / "artifacts")
    assert not (other / "report.pdf").exists()


def test_render_in_place_keeps_other_formats(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    before = folder_snapshot(copy)
    result = CliRunner().invoke(cli, ["render", str(copy), "--format", "html"])
    assert result.exit_code == 0, result.output
    assert folder_snapshot(copy) == before


def test_render_refuses_other_schema_and_non_bundles(bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    audit = json.loads((old / "audit.json").read_text())
    audit["schema_version"] = 1
    (old / "audit.json").write_text(json.dumps(audit))
    result = CliRunner().invoke(cli, ["render", str(old)])
    assert result.exit_code == 2
    assert "schema_version 1" in result.output and "Run the audit again" in result.output
    assert "Traceback" not in result.output

    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["render", str(empty)])
    assert result.exit_code == 2 and "not an audit bundle" in result.output

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "artifacts" / "galleries.npz").unlink()
    result = CliRunner().invoke(cli, ["render", str(broken)])
    assert result.exit_code == 2 and "missing" in result.output

    result = CliRunner().invoke(cli, ["render", str(bundle), "--format", "docx"])
    assert result.exit_code == 2 and "docx" in result.output


def test_artifacts_round_trip_without_pickle(tmp_path: Path) -> None:
    arts = Artifacts()
    arts.put("g", "a", np.arange(6, dtype=np.float16).reshape(2, 3))
    arts.put("g", "b", np.array([True, False]))
    arts.put("h", "c", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(TypeError):
        arts.put("g", "bad", np.array([{"x": 1}], dtype=object))
    audit = {"schema_version": SCHEMA_VERSION, "x": float("nan")}
    write_bundle(tmp_path, audit, arts)
    got_audit, got = read_bundle(tmp_path)
    assert got_audit["x"] is None
    assert [e["file"] for e in got_audit["artifacts"]] == ["artifacts/g.npz", "artifacts/h.npz"]
    np.testing.assert_array_equal(got.get("g", "a"), arts.get("g", "a"))
    assert got.get("g", "a").dtype == np.float16
    assert got.get("g", "missing") is None and got.group("nothing") == {}
    (tmp_path / "artifacts" / "h.npz").write_bytes(b"not a zip")
    with pytest.raises(ReporterError, match="damaged"):
        got.get("h", "c")


def test_to_json_is_strict() -> None:
    text = to_json({"a": np.float32(0.5), "b": [float("inf")], "c": np.arange(2)})
    assert json.loads(text) == {"a": 0.5, "b": [None], "c": [0, 1]}


def test_gallery_without_its_arrays_says_the_bundle_is_damaged() -> None:
    from reporter.report.views import _galleries

    assert _galleries({"classes": {}}, Artifacts(), "viridis") == {"classes": {}}
    section = {
        "methods": ["gradcam"],
        "classes": {"a": {"correct": [{"row": 0, "flagged_methods": []}]}},
    }
    with pytest.raises(ReporterError, match="damaged"):
        _galleries(section, Artifacts(), "viridis")
