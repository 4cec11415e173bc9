"""MODEL_CARD.md: front matter built with huggingface_hub and parsed back with it, limitations
from the audit's findings, training details beside the test numbers. Offline: nothing is pushed
or downloaded."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard

from reporter.report.modelcard import model_card_markdown


def _finding(id: str, severity: str, statement: str) -> dict[str, Any]:
    return {
        "id": id,
        "severity": severity,
        "statement": statement,
        "numbers": {},
        "evidence": {"anchor": "performance", "label": "Performance"},
        "recommendation": "Retrain without the cue.",
    }


def _audit(**card: Any) -> dict[str, Any]:
    return {
        "generated": "2026-01-01T00:00:00+00:00",
        "environment": {"reporter": "0.1.0"},
        "model_card": card,
        "model": {
            "arch": "gapnet",
            "parameters": 1234,
            "channels": 3,
            "input_size": [32, 32],
            "num_classes": 2,
            "class_names": ["a", "b"],
            "sha256": "f" * 64,
            "training_data_fingerprint": "tf",
            "training": {"epochs": 10, "images": 1600, "data": "shapes (95% cue)"},
        },
        "dataset": {"name": "shapes | test", "audited_images": 400, "fingerprint": "df"},
        "metrics": {
            "accuracy": 0.2875,
            "macro_f1": 0.28,
            "ece": 0.634,
            "train_accuracy": 0.966875,
            "per_class": [
                {"class": "a", "precision": 0.3, "recall": 0.2, "f1": 0.25, "support": 200},
                {"class": "b", "precision": 0.3, "recall": 0.4, "f1": 0.35, "support": 200},
            ],
        },
        "verdict": {"level": "fail", "reasons": ["an intervention found a shortcut for 2 of 2"]},
        "findings": [
            _finding("shortcut-intervention", "high", "The model relies on the background."),
            _finding("calibration", "medium", "The model is over-confident."),
            _finding("confusions", "info", "The most frequent confusion is a for b."),
        ],
    }


def test_front_matter_parses_back_with_the_test_metrics() -> None:
    text = model_card_markdown(_audit(license="mit"))
    card = ModelCard(text)
    data = card.data
    assert data.license == "mit" and data.library_name == "pytorch"
    assert data.model_name == "gapnet classifier"
    assert "verdict-fail" in data.tags
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"accuracy", "f1", "ece"}
    assert results["accuracy"].metric_value == 0.2875
    assert results["ece"].metric_value == 0.634
    assert results["accuracy"].dataset_name == "shapes | test"
    assert results["accuracy"].dataset_type == "shapes-test"
    assert results["accuracy"].dataset_split == "test"


def test_limitations_come_from_high_and_medium_findings_never_not_documented() -> None:
    text = model_card_markdown(_audit())
    section = text.split("## Bias, risks, and limitations")[1].split("###")[0]
    assert "Not documented" not in section
    assert "- **high:** The model relies on the background. *Next:* Retrain" in section
    assert "- **medium:** The model is over-confident." in section
    assert "confusion" not in section  # info findings stay in the findings list
    own = model_card_markdown(_audit(limitations="Demo only."))
    section = own.split("## Bias, risks, and limitations")[1].split("###")[0]
    assert section.index("relies on the background") < section.index("Demo only.")
    clean = _audit()
    clean["findings"] = clean["findings"][2:]
    section = model_card_markdown(clean).split("## Bias, risks, and limitations")[1]
    assert section.split("###")[0].strip() == (
        "The audit found no high- or medium-severity problem, and the owners documented no "
        "limitation."
    )


def test_training_details_beside_test_accuracy() -> None:
    text = model_card_markdown(_audit())
    training = text.split("## Training details")[1].split("## Evaluation")[0]
    assert "- **Data:** shapes (95% cue)" in training
    assert "- **Size:** 1,600 images" in training and "- **Epochs:** 10" in training
    assert "- **Accuracy:** 0.2875 on the test images, 0.9669 in the last training epoch" in (
        training
    )
    assert "**Audit verdict: fail.** An intervention found a shortcut for 2 of 2." in text
    assert "- **high:** The model relies on the background." in text.split("## Audit findings")[1]
