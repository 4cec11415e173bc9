"""Audit configuration: a frozen dataclass, read from TOML and overridden by CLI flags.

Every option of ``reporter audit`` is a field of :class:`AuditConfig`; a TOML file may set any
of them at top level, plus a ``[model_card]`` table. Flags given on the command line win over
the file. :func:`AuditConfig.to_toml` writes the effective configuration beside the report.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from reporter.errors import ReporterError
from reporter.explain.registry import METHODS

__all__ = ["FORMATS", "MODEL_CARD_FIELDS", "AuditConfig", "load_config", "parse_list"]

FORMATS = ("html", "pdf", "json", "modelcard")
MODEL_CARD_FIELDS = (
    "name",
    "version",
    "owners",
    "license",
    "intended_use",
    "out_of_scope_uses",
    "limitations",
    "ethical_considerations",
    "training_data",
    "evaluation_data",
)


def parse_list(value: Any) -> tuple[str, ...]:
    """Accept ``"a,b"``, ``["a", "b"]`` or ``None`` and return a tuple of stripped names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


@dataclass(frozen=True)
class AuditConfig:
    """Everything one audit run needs. Defaults run the built-in digits demo.

    Attributes:
        model: Checkpoint path, or an architecture name to train; ``None`` trains ``arch``.
        arch: Architecture to train (default gapnet), or of a bare state_dict.
        data: ``digits``, ``shapes``, ``shapes-spurious`` or an image folder.
        train_data: Explicit training folder.
        test_data: Explicit test folder.
        split: For a folder with ``model`` given: audit ``all`` its images or only the ``test``
            split (the one ``reporter train`` held out with the same seed).
        masks: Folder of object masks mirroring the image folder.
        methods: CAM methods, in report order.
        layers: Layers for CAMs (``auto`` = last spatial layer).
        featvis_layers: Layers whose channels are visualised (``auto`` = the CAM layer).
        featvis_channels: Channels visualised per layer.
        featvis_steps: Optimisation steps of activation maximisation.
        top_k: Top-activating dataset examples per channel.
        samples_per_class: Images per gallery row (most / least confident, misclassified).
        trust_samples: Test images used for the trust metrics.
        formats: Outputs to write among html, pdf, json, modelcard.
        out: Output folder.
        template_dir: Folder with templates overriding the default theme.
        colormap: Matplotlib colormap of the heatmaps (colour-blind safe by default).
        device: ``auto``, ``cpu``, ``cuda``.
        seed: Seeds the split, training, sampling and visualisation.
        epochs: Training epochs when the audit trains the model.
        lr: Training learning rate.
        batch_size: Batch size for training and the audit pass.
        input_size: Model input side (pixels) when training or for a bare state_dict.
        trust_checkpoint: Allow loading pickled modules (runs code from the file).
        spurious: For the shapes data: probability that background colour gives the class away.
        shortcut: For the shapes data's test split: ``absent`` or ``kept``.
        max_images: Audit at most this many test images (``None`` = all).
        cache_dir: Where the demo caches trained checkpoints (``None`` = user cache).
        quiet: No progress bars.
        model_card: Model-card fields (see ``MODEL_CARD_FIELDS``).
    """

    model: str | None = None
    arch: str | None = None
    data: str = "digits"
    train_data: str | None = None
    test_data: str | None = None
    split: str = "all"
    masks: str | None = None
    methods: tuple[str, ...] = ("gradcam", "gradcam++", "eigencam")
    layers: tuple[str, ...] = ("auto",)
    featvis_layers: tuple[str, ...] = ("auto",)
    featvis_channels: int = 8
    featvis_steps: int = 128
    top_k: int = 4
    samples_per_class: int = 3
    trust_samples: int = 200
    formats: tuple[str, ...] = ("html", "pdf", "json")
    out: str = "report"
    template_dir: str | None = None
    colormap: str = "viridis"
    device: str = "auto"
    seed: int = 0
    epochs: int = 3
    lr: float = 3e-3
    batch_size: int = 64
    input_size: int | None = None
    trust_checkpoint: bool = False
    spurious: float = 0.0
    shortcut: str = "absent"
    max_images: int | None = None
    cache_dir: str | None = None
    quiet: bool = False
    model_card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("methods", "layers", "featvis_layers", "formats"):
            object.__setattr__(self, name, parse_list(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Check values; raise :class:`ReporterError` naming the option and what to do."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ReporterError(
                f"Unknown method {unknown[0]!r}. Valid methods: {', '.join(METHODS)}."
            )
        if not self.methods:
            raise ReporterError("--methods is empty; name at least one method, e.g. gradcam.")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ReporterError(f"Unknown format {bad[0]!r}. Valid formats: {', '.join(FORMATS)}.")
        if not self.formats:
            raise ReporterError("--format is empty; choose from html, pdf, json, modelcard.")
        for name in (
            "featvis_channels",
            "featvis_steps",
            "samples_per_class",
            "epochs",
            "batch_size",
            "trust_samples",
            "top_k",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ReporterError(f"{name} must be a non-negative integer, got {value!r}.")
        if self.batch_size < 1 or self.epochs < 1:
            raise ReporterError("batch_size and epochs must be at least 1.")
        if self.split not in ("all", "test"):
            raise ReporterError(f"split must be 'all' or 'test', got {self.split!r}.")
        if self.shortcut not in ("absent", "kept"):
            raise ReporterError(f"shortcut must be 'absent' or 'kept', got {self.shortcut!r}.")
        if not 0.0 <= float(self.spurious) <= 1.0:
            raise ReporterError(f"spurious must be in [0, 1], got {self.spurious!r}.")
        if self.max_images is not None and self.max_images < 1:
            raise ReporterError("max_images must be at least 1.")
        bad_card = [k for k in self.model_card if k not in MODEL_CARD_FIELDS]
        if bad_card:
            raise ReporterError(
                f"Unknown model_card field {bad_card[0]!r}. Valid: {', '.join(MODEL_CARD_FIELDS)}."
            )
        import matplotlib

        if self.colormap not in matplotlib.colormaps:
            close = difflib.get_close_matches(self.colormap, list(matplotlib.colormaps), n=3)
            raise ReporterError(
                f"Unknown colormap {self.colormap!r}"
                + (f"; did you mean {', '.join(close)}?" if close else ".")
                + " Colour-blind-safe choices: viridis, cividis, magma, inferno."
            )

    def replace(self, **changes: Any) -> AuditConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (tuples as lists), for audit.json and TOML."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_toml(self) -> str:
        """The effective configuration as TOML (``None`` values are left out)."""
        lines = ["# Effective configuration of this report: `reporter audit --config <this file>`"]
        card = {}
        for key, value in self.to_dict().items():
            if key == "model_card":
                card = value
                continue
            if value is None:
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        if card:
            lines.append("")
            lines.append("[model_card]")
            for key, value in card.items():
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> AuditConfig:
    """Read a TOML config (optional) and apply ``overrides`` (flags given on the command line).

    Raises:
        ReporterError: for a missing or malformed file, unknown keys or invalid values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ReporterError(f"Config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ReporterError(f"{path} is not valid TOML: {exc}") from exc
        if isinstance(data.get("audit"), dict):  # allow an [audit] table too
            data = {**data.pop("audit"), **data}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    valid = {f.name for f in fields(AuditConfig)}
    unknown = [k for k in data if k not in valid]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(valid), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ReporterError(f"Unknown config option {unknown[0]!r}.{hint}")
    try:
        return AuditConfig(**data)
    except TypeError as exc:
        raise ReporterError(f"Invalid configuration: {exc}") from exc
