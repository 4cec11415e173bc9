"""The audit stages on small hand-made inputs: no training, no CLI."""

from __future__ import annotations

import numpy as np
import torch

from reporter.audit.explanations import border_summary, class_averages, select_gallery
from reporter.audit.findings import key_findings, shortcut_sentence
from reporter.audit.results import uint8_images, uint8_maps
from reporter.audit.stream import StreamResult, audit_indices, content_hashes, stats_size
from reporter.bundle import Artifacts
from reporter.config import AuditConfig
from reporter.predict import Predictions
from reporter.report.views import report_figures


def _preds(probs: list[list[float]], labels: list[int]) -> Predictions:
    return Predictions(
        probs=np.array(probs, dtype=np.float32),
        labels=np.array(labels),
        indices=np.arange(len(labels)) + 100,
    )


def _stream() -> StreamResult:
    """Two classes, 2x2 stats maps: class 0 lights the top-left corner, class 1 nothing."""
    preds = _preds([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], [0, 0, 1, 1])
    sums = torch.zeros(2, 2, 2)
    sums[0, 0, 0] = 2.0  # two correct images of class 0, each with 1 at the top left
    return StreamResult(
        predictions=preds,
        layers=["conv"],
        methods=["gradcam"],
        border={"gradcam": {"conv": np.array([0.1, 0.3, 0.5, 0.7])}},
        flagged={"gradcam": {"conv": 0}},
        class_sum={"gradcam": {"conv": sums}},
        class_count=torch.tensor([2.0, 0.0]),
        image_sum=torch.ones(2, 3, 2, 2),
        image_count=torch.tensor([2.0, 2.0]),
    )


def test_audit_indices_take_classes_in_turn() -> None:
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1)
    picked = audit_indices(len(labels), labels, 3, seed=0)
    assert sorted(labels[picked].tolist()) == [0, 1, 2]
    assert audit_indices(len(labels), labels, None, seed=0).tolist() == list(range(13))
    assert (audit_indices(13, labels, 5, seed=1) == audit_indices(13, labels, 5, seed=1)).all()


def test_stats_size_and_hashes() -> None:
    assert stats_size((224, 112)) == (64, 32)
    assert stats_size((16, 16)) == (16, 16)
    a = torch.rand(3, 3, 8, 8)
    h = content_hashes(a)
    assert h.dtype == np.uint64 and len(set(h.tolist())) == 3
    assert (content_hashes(a + 1e-5) == h).sum() >= 2  # below one grey level: same hash mostly


def test_select_gallery_never_shows_non_finite_outputs() -> None:
    preds = _preds([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8], [0.7, 0.3]], [0, 0, 1, 1])
    chosen = select_gallery(preds, 2)
    shown = {p for groups in chosen.values() for ps in groups.values() for p in ps}
    assert 1 not in shown
    assert chosen[0]["most_confident"] == [0]
    assert chosen[1] == {"most_confident": [2], "least_confident": [], "misclassified": [3]}


def test_class_averages_normalise_per_class_and_mark_empty_classes() -> None:
    result = class_averages(["a", "b"], _stream())
    maps = result.arrays["maps"]
    assert maps.shape == (1, 1, 2, 2, 2) and maps.dtype == np.uint8
    assert maps[0, 0, 0].tolist() == [[255, 0], [0, 0]]
    assert maps[0, 0, 1].max() == 0  # no correct image of class b
    assert result.arrays["counts"].tolist() == [2, 0]
    assert result.section["classes"]["b"]["border_fraction"]["gradcam@conv"] == 0.6
    assert result.section["classes"]["a"]["correct_images"] == 2


def test_border_summary_names_the_class_leaning_on_the_border() -> None:
    config = AuditConfig(methods=("gradcam",))
    s = border_summary(config, ["a", "b"], _stream())
    assert s is not None
    assert s["class"] == "b" and abs(s["class_value"] - 0.6) < 1e-9
    assert abs(s["mean"] - 0.4) < 1e-9


def test_uint8_conversions() -> None:
    img = uint8_images(torch.tensor([[[[0.0, 1.0]]]]))  # [1, 1, 1, 2] grey
    assert img.shape == (1, 1, 2, 3) and img[0, 0, 1].tolist() == [255, 255, 255]
    assert uint8_maps(np.array([np.nan, 0.5, 2.0])).tolist() == [0, 128, 255]


def _texts(audit: dict) -> list[str]:
    """The statements of the findings, in rank order."""
    return [f["statement"] for f in key_findings(audit)]


def _audit(shortcut: dict, sanity: dict | None = None) -> dict:
    return {
        "metrics": {
            "n_images": 10,
            "accuracy": 1.0,
            "macro_f1": 1.0,
            "per_class": [{"class": c, "recall": 1.0, "support": 5} for c in ("a", "b")],
            "confusion_matrix": [[5, 0], [0, 5]],
            "ece": 0.01,
            "mean_confidence": 0.99,
            "reliability": [],
        },
        "trust": {"shortcut": shortcut, "sanity": sanity or {}},
        "explanations": {"methods": [{"name": "gradcam"}]},
        "skipped": [],
    }


def _effect(**kw: float) -> dict:
    base = {
        "n": 20,
        "accuracy_with": 0.9,
        "accuracy_without": 0.2,
        "drop": 0.7,
        "changed": 0.8,
        "interval": [0.5, 0.85],
    }
    return {**base, **kw}


def test_findings_write_the_shortcut_sentence_once_from_the_intervention() -> None:
    one = {"flagged": True, "basis": "mask", "method": "gradcam", "intervention": _effect()}
    ok = {"flagged": False, "basis": "mask", "level": "none", "intervention": _effect(drop=0.0)}
    findings = _texts(_audit({"a": one, "b": ok}))
    assert findings[0] == shortcut_sentence([("a", one)], 2)
    assert findings[0].startswith("Shortcut for class “a”: with its objects kept")
    assert "recall goes from 90% to 20%" in findings[0] and "n = 20" in findings[0]
    assert "0.50–0.85" in findings[0]
    two = {**one, "intervention": _effect(changed=0.6, n=12, drop=0.3)}
    both = _texts(_audit({"a": one, "b": two}))
    assert both[0].startswith("Shortcut for 2 of 2 classes (“a” and “b”)")
    assert "60%–80% of their predictions change" in both[0] and "n = 12–20 per class" in both[0]
    assert "-70 to -30 points" in both[0]
    assert not any("hortcut" in f for f in _texts(_audit({"a": ok})))
    clear = _texts(_audit({"a": ok, "b": {**ok, "intervention": _effect(changed=0.05)}}))
    assert clear[0] == (
        "No class relies on its background: with other classes' backgrounds put behind the "
        "objects, at most 80% of a class's predictions change (n = 20 per class)."
    )


def test_saliency_alone_never_flags_only_names_candidates() -> None:
    inspect = {"flagged": False, "basis": "region", "level": "inspect", "intervention": None}
    findings = _texts(_audit({"a": inspect, "b": {"flagged": False, "level": "none"}}))
    assert not any("hortcut" in f for f in findings)


def test_region_cue_sentence_names_position_and_control() -> None:
    cue = {
        "flagged": True,
        "position": "top left",
        "area_fraction": 0.05,
        "flip_rate": 0.9,
        "control_flip_rate": 0.1,
        "method": "layercam",
        "layer": "relu3",
        "paste": {"n": 30},
    }
    entry = {"flagged": True, "basis": "region", "method": "gradcam", "intervention": cue}
    text = _texts(_audit({"a": entry, "b": {"flagged": False}}))[0]
    assert "(top left, 5% of the image) into 30 images" in text
    assert "for 90% of them (10% with a region from another class)" in text
    assert "LayerCAM at layer relu3" in text and "watermark-like cue" in text


def test_findings_grade_sanity_with_interval_and_floor() -> None:
    failed = {
        "status": "failed",
        "layer": "relu3",
        "spearman": 0.78,
        "interval": [0.7, 0.85],
        "floor_spearman": 0.72,
        "n_seeds": 3,
        "meaning": "mainly shows where the object is.",
    }
    findings = _texts(_audit({}, {"eigencam": failed, "gradcam": {"status": "passed"}}))
    text = next(f for f in findings if f.startswith("EigenCAM"))
    assert text.startswith("EigenCAM on layer relu3 failed the randomization test")
    assert "0.78 (95% interval 0.70–0.85)" in text and "agree 0.72" in text
    assert text.endswith("Mainly shows where the object is.")
    assert not any(f.startswith("Grad-CAM") for f in findings)


def test_report_figures_from_arrays_alone() -> None:
    """The report's figures come from a plain dict and arrays: no model, no data."""
    arts = Artifacts()
    arts.put("records", "confidence", np.array([0.9, 0.6], np.float32))
    arts.put("records", "label", np.array([0, 1]))
    arts.put("records", "pred", np.array([0, 0]))
    arts.put("galleries", "images", np.zeros((1, 4, 4, 3), np.uint8))
    arts.put("galleries", "maps", np.full((1, 1, 4, 4), 255, np.uint8))
    audit = _audit({})
    audit["dataset"] = {"classes": ["a", "b"]}
    audit["config"] = {"colormap": "viridis"}
    audit["explanations"] = {
        "methods": [{"name": "gradcam"}],
        "galleries": {
            "methods": ["gradcam"],
            "classes": {
                "a": {"most_confident": [{"row": 0, "flagged_methods": []}]},
                "b": {"misclassified": [{"row": 0, "flagged_methods": ["gradcam"]}]},
            },
        },
    }
    figs = report_figures(audit, arts)
    tile = figs["gallery"]["classes"]["a"]["most_confident"][0]
    assert tile["original"].startswith("data:image/png;base64,")
    assert tile["overlays"]["gradcam"].startswith("data:image/png;base64,")
    assert figs["gallery"]["classes"]["b"]["misclassified"][0]["overlays"]["gradcam"] is None
    assert figs["class_average"] == {} and figs["trust"] == {"shortcut_evidence": {}}
    assert figs["confusion"].startswith("data:image/png")


def test_findings_for_a_model_with_no_finite_output() -> None:
    audit = _audit({})
    audit["metrics"].update(
        ece=None,
        mean_confidence=None,
        accuracy=0.0,
        all_outputs_nonfinite=True,
        nonfinite_outputs=10,
        nonfinite_inputs=2,
        classes_without_images=["c"],
        train_accuracy=0.9,
    )
    findings = _texts(audit)
    assert findings[0].startswith("The model produced no usable output: all 10")
    assert not any("calibrated" in f or "confident" in f for f in findings)
    assert not any("weak" in f or "below training accuracy" in f for f in findings)
    assert any("2 images held NaN or infinite pixel values" in f for f in findings)
    assert any("1 class (“c”) has no readable test image" in f for f in findings)


def test_findings_count_some_non_finite_outputs() -> None:
    audit = _audit({})
    audit["metrics"].update(nonfinite_outputs=3)
    assert any(
        f.startswith("The model produced no valid output") and "3 of the 10" in f
        for f in _texts(audit)
    )


def test_verdict_rules() -> None:
    from reporter.audit.verdict import verdict

    clean = _audit({"a": {"flagged": False}}, {"gradcam": {"status": "passed"}})
    assert verdict(clean)["level"] == "pass"
    review = _audit({}, {"eigencam": {"status": "failed"}})
    got = verdict(review)
    assert got["level"] == "review" and got["reasons"][0].startswith("EigenCAM failed")
    ece = _audit({})
    ece["metrics"]["ece"] = 0.2
    assert "ECE 0.200" in verdict(ece)["reasons"][0]
    shortcut = _audit(
        {"a": {"flagged": True}, "b": {"flagged": False}}, {"x": {"status": "failed"}}
    )
    got = verdict(shortcut)
    assert got["level"] == "fail" and got["reasons"] == [
        "an intervention found a shortcut for 1 of 2 classes (“a”)"
    ]
    nan = _audit({})
    nan["metrics"].update(all_outputs_nonfinite=True, ece=None)
    assert verdict(nan)["level"] == "fail"
    known = _audit({})
    known["dataset"] = {"shortcut_check": {"accuracy_shortcut_kept": 1.0,
                                           "accuracy_shortcut_absent": 0.25}}  # fmt: skip
    assert verdict(known)["reasons"] == [
        "accuracy falls from 100% to 25% without the background shortcut (a drop above 10%)"
    ]
