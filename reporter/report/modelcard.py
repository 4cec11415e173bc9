"""``MODEL_CARD.md``: a Markdown model card in the Hugging Face layout, from the audit context.

The front matter (``library_name``, ``license``, ``tags`` and the ``model-index`` with the
test metrics) is built with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData` and
:class:`~huggingface_hub.EvalResult` and the whole card is parsed back with
:class:`~huggingface_hub.ModelCard` before it is returned; nothing is sent anywhere (no push,
no download). Limitations list the high- and medium-severity findings of the audit above
whatever the owners wrote, so the card never says "Not documented" above a finding such as
"the model relies on the background".
"""

from __future__ import annotations

import re
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from reporter.report.changelog import changelog_markdown

__all__ = ["card_data", "model_card_markdown"]


def _field(card: dict[str, Any], key: str, default: str = "Not documented.") -> str:
    value = card.get(key)
    if value is None or value == "" or value == []:
        return default
    if isinstance(value, (list, tuple)):
        return "\n".join(f"- {v}" for v in value)
    return str(value)


def _md(text: str) -> str:
    """Neutralise Markdown/HTML control characters in data-derived text."""
    return (
        str(text)
        .replace("\\", "\\\\")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "data"


def card_data(audit: dict[str, Any]) -> ModelCardData:
    """The front matter: metadata and a ``model-index`` with the test-set metrics of
    ``audit`` (accuracy, macro F1, ECE, top-5 accuracy where known)."""
    card = audit.get("model_card") or {}
    model = audit["model"]
    data = audit["dataset"]
    m = audit["metrics"]
    name = str(card.get("name") or f"{model['arch']} classifier")
    metrics = [
        ("accuracy", "Accuracy", m.get("accuracy")),
        ("f1", "Macro F1", m.get("macro_f1")),
        ("ece", "Expected calibration error (15 bins)", m.get("ece")),
        ("top-5-accuracy", "Top-5 accuracy", m.get("top5_accuracy")),
    ]
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image classification",
            dataset_type=_slug(data["name"]),
            dataset_name=str(data["name"]),
            dataset_split="test",
            metric_type=kind,
            metric_name=label,
            metric_value=round(float(value), 6),
        )
        for kind, label, value in metrics
        if value is not None
    ]
    return ModelCardData(
        model_name=name,
        license=str(card.get("license") or "other"),
        library_name="pytorch",
        pipeline_tag="image-classification",
        tags=["image-classification", "reporter-audit", f"verdict-{_verdict(audit)}"],
        eval_results=results or None,
    )


def _verdict(audit: dict[str, Any]) -> str:
    return str((audit.get("verdict") or {}).get("level") or "none")


def _limitations(audit: dict[str, Any], card: dict[str, Any]) -> str:
    """The audit's high- and medium-severity findings, then the owners' own text."""
    flagged = [
        f
        for f in audit.get("findings") or []
        if isinstance(f, dict) and f.get("severity") in ("high", "medium")
    ]
    lines = [
        f"- **{_md(f['severity'])}:** {_md(f['statement'])} *Next:* {_md(f['recommendation'])}"
        for f in flagged
    ]
    text = "\n".join(lines)
    if lines:
        text = "Found by the audit (high and medium findings):\n\n" + text
    own = _field(card, "limitations", "")
    if own:
        text += ("\n\nDocumented by the owners:\n\n" if text else "") + _md(own)
    return text or (
        "The audit found no high- or medium-severity problem, and the owners documented no "
        "limitation."
    )


def _training(audit: dict[str, Any], card: dict[str, Any]) -> list[str]:
    model = audit["model"]
    m = audit["metrics"]
    training = model.get("training") or {}
    lines = []
    if card.get("training_data"):
        lines += [_md(_field(card, "training_data")), ""]
    if training:
        images = training.get("images")
        lines += [
            f"- **Data:** {_md(training.get('data') or 'unknown')}",
            f"- **Size:** {images:,} images" if isinstance(images, int) else "- **Size:** unknown",
            f"- **Epochs:** {training.get('epochs') or 'unknown'}",
        ]
    else:
        lines.append("- The checkpoint records no training run (data, size, epochs unknown).")
    lines.append(
        f"- **Training data fingerprint:** `{model.get('training_data_fingerprint') or 'unknown'}`"
    )
    train = m.get("train_accuracy")
    lines.append(
        f"- **Accuracy:** {m['accuracy']:.4f} on the test images"
        + (
            f", {train:.4f} in the last training epoch"
            if train is not None
            else " (training accuracy not recorded)"
        )
    )
    return lines


def model_card_markdown(audit: dict[str, Any]) -> str:
    """Render the model card; every number comes from ``audit``."""
    card = audit.get("model_card") or {}
    model = audit["model"]
    data = audit["dataset"]
    m = audit["metrics"]
    meta = card_data(audit)
    name = meta.model_name or f"{model['arch']} classifier"
    verdict = audit.get("verdict") or {}
    lines = [
        "---",
        meta.to_yaml(),
        "---",
        "",
        f"# {_md(name)}",
        "",
        f"Generated by reporter {audit['environment']['reporter']} on {audit['generated']}.",
        "",
        f"**Audit verdict: {_md(_verdict(audit))}.** "
        + " ".join(f"{_md(r[0].upper() + r[1:])}." for r in verdict.get("reasons") or []),
        "",
        "## Model details",
        "",
        f"- **Architecture:** {_md(model['arch'])} ({model['parameters']:,} parameters)",
        f"- **Input:** {model['channels']} x {model['input_size'][0]} x {model['input_size'][1]}",
        f"- **Classes ({model['num_classes']}):** "
        + ", ".join(_md(c) for c in model["class_names"]),
        f"- **Weights SHA-256:** `{model['sha256']}`",
        f"- **Version:** {_md(_field(card, 'version', 'unversioned'))}",
        f"- **Owners:** {_md(_field(card, 'owners'))}",
        "",
        "## Uses",
        "",
        "### Intended use",
        "",
        _md(_field(card, "intended_use")),
        "",
        "### Out-of-scope uses",
        "",
        _md(_field(card, "out_of_scope_uses")),
        "",
        "## Bias, risks, and limitations",
        "",
        _limitations(audit, card),
        "",
        "### Ethical considerations",
        "",
        _md(_field(card, "ethical_considerations")),
        "",
        "## Training details",
        "",
        *_training(audit, card),
        "",
        "## Evaluation",
        "",
        f"Evaluated on {data['audited_images']} images of {_md(data['name'])} "
        f"(fingerprint `{data['fingerprint']}`).",
        "",
        _md(_field(card, "evaluation_data", "")),
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {m['accuracy']:.4f} |",
        f"| macro F1 | {m['macro_f1']:.4f} |",
        f"| expected calibration error (15 bins) | {_number(m['ece'])} |",
    ]
    if m.get("top5_accuracy") is not None:
        lines.append(f"| top-5 accuracy | {m['top5_accuracy']:.4f} |")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for row in m["per_class"]:
        lines.append(
            f"| {_md(row['class'])} | {row['precision']:.3f} | {row['recall']:.3f} | "
            f"{row['f1']:.3f} | {row['support']} |"
        )
    lines += ["", "## Audit findings", ""]
    lines += [
        f"- **{_md(f['severity'])}:** {_md(f['statement'])}" for f in audit.get("findings") or []
    ]
    lines += changelog_markdown(audit)
    lines += [
        "",
        "The full audit (saliency maps, feature visualization, trust checks) is in "
        "`report.pdf` / `report.html`; machine-readable numbers in `audit.json`.",
        "",
    ]
    text = "\n".join(lines)
    ModelCard(text)  # parses the front matter back: a malformed card fails here, not on the hub
    return text
