"""Audit configuration: a frozen dataclass, read from TOML and overridden by CLI flags.

Every option of ``reporter audit`` is a field of :class:`AuditConfig`; a TOML file may set any
of them at top level, plus a ``[model_card]`` table. Flags given on the command line win over
the file. :func:`AuditConfig.to_toml` writes the effective configuration beside the report.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from reporter.errors import ReporterError
from reporter.explain.registry import METHODS

__all__ = [
    "FORMATS",
    "MODEL_CARD_FIELDS",
    "PATH_FIELDS",
    "SIGNOFF_FIELDS",
    "TRUST_SETTINGS",
    "VERDICT_FIELDS",
    "AuditConfig",
    "check_trust",
    "check_types",
    "check_value",
    "load_config",
    "parse_list",
]

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


@dataclass(frozen=True)
class TableKey:
    """One key of a configuration table (``[verdict]``, ``[signoff]``): its type, default,
    bounds and what it does (the docs and the error messages use ``doc``)."""

    type: type
    default: Any
    doc: str
    min: float | None = None
    max: float | None = None


VERDICT_FIELDS: dict[str, TableKey] = {
    "shortcut_fail": TableKey(
        bool, True, "a class flagged by a shortcut intervention fails the model (else: review)"
    ),
    "shortcut_accuracy_drop": TableKey(
        float,
        0.1,
        "on data with a known shortcut, an accuracy drop without it above this fails the model",
        0.0,
        1.0,
    ),
    "sanity_review": TableKey(
        bool, True, "a method shown that failed the randomization test sets review"
    ),
    "ece_review": TableKey(
        float, 0.1, "an expected calibration error above this sets review", 0.0, 1.0
    ),
    "weak_class_recall": TableKey(
        float,
        0.5,
        "a class with recall below this (and at least weak_class_min_images test images) is "
        "weak and sets review",
        0.0,
        1.0,
    ),
    "weak_class_min_images": TableKey(
        int, 10, "test images a class needs before its recall can make it weak", 1, None
    ),
}
"""The ``[verdict]`` table: the thresholds and switches of the verdict rules (docs/trust.rst)."""

SIGNOFF_FIELDS: dict[str, TableKey] = {
    "reviewer": TableKey(str, "", "who reviewed the report"),
    "approver": TableKey(str, "", "who approved the model"),
    "date": TableKey(str, "", "date of the sign-off, as you write dates"),
}
"""The ``[signoff]`` table: names printed in the report's sign-off block (blank lines to sign
when left out)."""


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
        featvis_size: Size of the activation-maximisation renders: ``auto`` (the model's input
            size with its longer side capped at 128 px) or the longer side in pixels (the
            aspect ratio is kept); the input size when the model does not run at that size.
        top_k: Top-activating dataset examples per channel.
        samples_per_class: Images per gallery row (most / least confident, misclassified).
        trust_samples: Test images used for the trust metrics.
        formats: Outputs to write among html, pdf, json, modelcard.
        out: Output folder.
        template_dir: Folder with templates overriding the default theme.
        colormap: Matplotlib colormap of the heatmaps (colour-blind safe by default).
        pdf_variant: Archival or accessible PDF variant (``pdf/a-3b``, ``pdf/ua-1``, ...;
            one WeasyPrint knows), or ``None`` for a plain tagged PDF.
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
        previous: An earlier audit bundle: the report and model card say what changed since.
        workers: DataLoader worker processes (``None``: from the CPU count; 0 for images held
            in memory).
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast) for the stream pass's forward and
            backward; checked against fp32 on the first batch.
        model_card: Model-card fields (see ``MODEL_CARD_FIELDS``).
        verdict: Thresholds and switches of the verdict rules (see ``VERDICT_FIELDS``); keys
            left out take their defaults.
        signoff: Reviewer, approver and date of the sign-off block (see ``SIGNOFF_FIELDS``).
        resize: Stated preprocessing: ``cover`` (keep the aspect ratio, centre crop) or
            ``stretch`` (``None``: from the checkpoint, else ``cover``).
        crop: Centre-crop fraction in (0, 1] (0.875 = resize 256, crop 224).
        channel_order: ``rgb`` or ``bgr``.
        grayscale: Make images grey before the model sees them.
        mean: Normalisation mean, one value or one per channel (model's channel order).
        std: Normalisation standard deviation.
        arch_kwargs: Keyword arguments for a ``package.module:factory`` or ``timm:NAME``
            architecture (a ``[arch_kwargs]`` table).
        weights_sha256: The weights the audit expects (audit.toml records them); a model whose
            weights hash differs is refused.
        trust: The ``[trust]`` table: thresholds and sample sizes of the trust checks (see
            :data:`TRUST_SETTINGS`); held complete, defaults filled in.
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
    featvis_channels: int = field(default=8, metadata={"min": 0})
    featvis_steps: int = field(default=128, metadata={"min": 0})
    featvis_size: int | str = field(default="auto", metadata={"min": 1, "words": ("auto",)})
    top_k: int = field(default=4, metadata={"min": 0})
    samples_per_class: int = field(default=3, metadata={"min": 0})
    trust_samples: int = field(default=200, metadata={"min": 0})
    formats: tuple[str, ...] = ("html", "pdf", "json")
    out: str = "report"
    template_dir: str | None = None
    colormap: str = "viridis"
    pdf_variant: str | None = None
    device: str = "auto"
    seed: int = field(default=0, metadata={"min": 0, "max": 2**63 - 1})
    epochs: int = field(default=3, metadata={"min": 1})
    lr: float = field(default=3e-3, metadata={"above": 0.0})
    batch_size: int = field(default=64, metadata={"min": 1})
    input_size: int | None = field(default=None, metadata={"min": 1})
    trust_checkpoint: bool = False
    spurious: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    shortcut: str = "absent"
    max_images: int | None = field(default=None, metadata={"min": 1})
    cache_dir: str | None = None
    quiet: bool = False
    previous: str | None = None
    # scale (docs/scale.rst): data loading and the precision of the stream pass
    workers: int | None = field(default=None, metadata={"min": 0})
    precision: str = "fp32"
    model_card: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict, metadata={"table": VERDICT_FIELDS})
    signoff: dict[str, Any] = field(default_factory=dict, metadata={"table": SIGNOFF_FIELDS})
    # --- stated preprocessing and custom architectures (docs/own-model.rst) ---
    resize: str | None = field(default=None, metadata={"choices": ("cover", "stretch")})
    crop: float | None = field(default=None, metadata={"above": 0.0, "min": 0.0, "max": 1.0})
    channel_order: str | None = field(default=None, metadata={"choices": ("rgb", "bgr")})
    grayscale: bool | None = None
    mean: tuple[float, ...] | None = field(default=None, metadata={"lengths": (1, 3)})
    std: tuple[float, ...] | None = field(default=None, metadata={"lengths": (1, 3), "above": 0.0})
    arch_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"any_table": True})
    weights_sha256: str | None = None
    trust: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):  # the typed schema: see check_value
            object.__setattr__(self, f.name, check_value(f.name, getattr(self, f.name)))
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
        if self.split not in ("all", "test"):
            raise ReporterError(f"split must be 'all' or 'test', got {self.split!r}.")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ReporterError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}.")
        if self.shortcut not in ("absent", "kept"):
            raise ReporterError(f"shortcut must be 'absent' or 'kept', got {self.shortcut!r}.")
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

        if self.pdf_variant is not None:
            from weasyprint.pdf import VARIANTS  # only when asked: WeasyPrint is slow to import

            valid = sorted(v for v in VARIANTS if v != "debug")
            if self.pdf_variant not in valid:
                raise ReporterError(
                    f"Unknown pdf_variant {self.pdf_variant!r}. Valid: {', '.join(valid)}."
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

    def preprocessing(self) -> dict[str, Any]:
        """The stated preprocessing keys (``None`` = not stated), for the model loader."""
        return {
            "input_size": self.input_size,
            "resize": self.resize,
            "crop": self.crop,
            "channel_order": self.channel_order,
            "grayscale": self.grayscale,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
        }

    def to_toml(self, relative_to: str | os.PathLike[str] | None = None) -> str:
        """The effective configuration as TOML, written with tomli-w (``None`` values are
        left out). With ``relative_to`` (the folder the file will be written to), paths are
        written relative to it, as :func:`load_config` reads them."""
        import tomli_w

        data: dict[str, Any] = {}
        tables: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if value is None:
                continue
            if isinstance(value, dict):
                if value:
                    tables[key] = value
                continue
            if relative_to is not None and key in PATH_FIELDS and isinstance(value, str):
                value = _relative_path(key, value, Path(relative_to))
            data[key] = value
        header = "# Effective configuration of this report: `reporter audit --config <this file>`\n"
        header += "# Paths are relative to this file.\n" if relative_to is not None else ""
        return header + tomli_w.dumps({**data, **tables})


PATH_FIELDS = (
    "model",
    "data",
    "train_data",
    "test_data",
    "masks",
    "out",
    "template_dir",
    "cache_dir",
)
"""Fields that hold paths: relative ones in a TOML file are relative to that file."""


def _is_path_value(key: str, value: str, base: Path) -> bool:
    """Whether ``value`` of ``key`` names a path (``model`` and ``data`` may be names)."""
    if key == "data":
        from reporter.data.registry import registered_datasets

        return value not in registered_datasets()
    if key == "model":
        return (
            (base / value).exists()
            or Path(value).exists()
            or "/" in value
            or Path(value).suffix in {".pt", ".pth", ".ckpt", ".ts", ".bin"}
        )
    return True


def _relative_path(key: str, value: str, base: Path) -> str:
    """``value`` (relative to the working directory) as a path relative to ``base``."""
    if not _is_path_value(key, value, Path.cwd()) or (key == "model" and not Path(value).exists()):
        return value
    try:
        return Path(os.path.relpath(Path(value).resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(Path(value).resolve())


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a TOML file's values relative to its folder ``base``."""
    for key in PATH_FIELDS:
        value = data.get(key)
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        if _is_path_value(key, value, base):
            data[key] = os.path.normpath(base / value)


def _toml_value(value: Any) -> str:
    """A value as TOML text, for messages (files are written with tomli-w)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# ------------------------------------------------------------------ the typed schema

_TYPE_WORDS = {
    bool: "a boolean (true or false, without quotes)",
    int: "an integer (without quotes)",
    float: "a number",
    str: "a string (in quotes)",
    type(None): "nothing",
}
_LIST_WORD = 'a list of strings (["a", "b"]) or one comma-separated string ("a,b")'
_TABLE_WORD = "a table of strings or lists of strings ([model_card])"


@functools.cache
def _schema() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Field name -> (type, metadata), read from :class:`AuditConfig`'s annotations."""
    hints = get_type_hints(AuditConfig)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in fields(AuditConfig)}


def _kind(value: Any) -> str:
    """What a value is, in the words of a TOML file."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """The value as it would be written in TOML (shortened)."""
    text = _toml_value(value) if isinstance(value, (bool, int, float, str, list, tuple)) else None
    text = text if text is not None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(value: Any, tp: Any) -> tuple[bool, Any]:
    """``(True, value as the field holds it)`` when ``value`` fits type ``tp``."""
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        for arm in get_args(tp):
            ok, converted = _convert(value, arm)
            if ok:
                return True, converted
        return False, None
    if tp is type(None):
        return value is None, None
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        if isinstance(value, os.PathLike):  # the Python API may pass a Path
            value = os.fspath(value)
        return isinstance(value, str), value
    if origin is tuple and get_args(tp)[0] is float:  # numbers: a list, or "0.5,0.5,0.5"
        if isinstance(value, str):
            try:
                numbers = tuple(float(v) for v in value.split(",") if v.strip())
            except ValueError:
                return False, None
            ok = bool(numbers) and all(math.isfinite(v) for v in numbers)
            return ok, numbers if ok else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        ok = (
            isinstance(value, (list, tuple))
            and bool(value)
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            )
        )
        return ok, tuple(float(v) for v in value) if ok else None
    if origin is tuple:  # tuple[str, ...]: a list of strings, or the CLI's comma string
        if isinstance(value, str):
            return True, parse_list(value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return True, parse_list(value)
        return False, None
    if origin is dict:  # model_card: strings or lists of strings
        ok = isinstance(value, dict) and all(
            isinstance(k, str)
            and (
                isinstance(v, str)
                or (isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))
            )
            for k, v in value.items()
        )
        return ok, dict(value) if ok else None
    raise TypeError(f"AuditConfig has a field of a type the schema does not know: {tp!r}")


def _expected(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        words = [_expected(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(words) + (", or leave it out" if type(None) in get_args(tp) else "")
    if origin is tuple and get_args(tp)[0] is float:
        return "a list of finite numbers ([0.5, 0.5, 0.5]) or one comma-separated string"
    if origin is tuple:
        return _LIST_WORD
    if origin is dict:
        return _TABLE_WORD
    return _TYPE_WORDS[tp]


def check_value(name: str, value: Any) -> Any:
    """Check one configuration value against :class:`AuditConfig`'s schema; return it as the
    field holds it (a comma string as a tuple, an int as a float where a float is expected).

    The schema is the dataclass itself: each field's type annotation (``bool`` must be a TOML
    boolean, ``int`` an integer but not a boolean, ``float`` any finite number,
    ``tuple[str, ...]`` a list of strings or one comma-separated string, ``X | None`` may be
    left out) and the bounds in its metadata (``min``, ``max``, ``above``; ``choices``, the
    allowed strings; ``lengths``, the allowed lengths of a list of numbers, each then
    ``above`` the bound; ``words``: the only strings an ``int | str`` field takes).

    Raises:
        ReporterError: one line naming the key, the value and what was expected.
    """
    if name == "trust":
        return check_trust(value)
    tp, bounds = _schema()[name]
    if "table" in bounds:
        return _check_table(name, value, bounds["table"])
    if name == "model" and hasattr(value, "forward") and hasattr(value, "state_dict"):
        raise ReporterError(
            "model = an in-memory nn.Module; the configuration holds paths and names. Pass the "
            "module itself: reporter.run_audit(config, model=module, preprocess=..., "
            "classes=[...])."
        )
    if bounds.get("any_table"):  # keyword arguments: any TOML values under string keys
        if not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise ReporterError(
                f"{name} = {_show(value)} is {_kind(value)}; expected a table ([{name}])."
            )
        return dict(value)
    if get_origin(tp) is dict and isinstance(value, dict):  # name the bad entry of the table
        for key, entry in value.items():
            strings = isinstance(entry, (list, tuple)) and all(isinstance(x, str) for x in entry)
            if not (isinstance(entry, str) or strings):
                raise ReporterError(
                    f"{name}.{key} = {_show(entry)} is {_kind(entry)}; expected a string or a "
                    "list of strings."
                )
    ok, converted = _convert(value, tp)
    words = bounds.get("words")  # an integer or one of these strings (featvis_size: "auto")
    if words is not None and (not ok or (isinstance(converted, str) and converted not in words)):
        lo = bounds.get("min")
        number = "an integer" + (f" of at least {lo}" if lo is not None else "")
        choices = " or ".join(f'"{w}"' for w in words)
        raise ReporterError(
            f"{name} = {_show(value)} is {_kind(value)}; expected {choices} or {number} "
            "(without quotes)."
        )
    if not ok:
        raise ReporterError(f"{name} = {_show(value)} is {_kind(value)}; expected {_expected(tp)}.")
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ReporterError(f"{name} = {_show(value)} is not a finite number.")
    if isinstance(converted, (int, float)) and not isinstance(converted, bool):
        lo, hi, above = bounds.get("min"), bounds.get("max"), bounds.get("above")
        if (lo is not None and converted < lo) or (hi is not None and converted > hi):
            span = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise ReporterError(f"{name} = {_show(value)} is out of range; it must be {span}.")
        if above is not None and not converted > above:
            raise ReporterError(f"{name} = {_show(value)} must be above {above}.")
    allowed = bounds.get("choices")
    if allowed is not None and converted is not None and converted not in allowed:
        either = ", ".join(repr(c) for c in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ReporterError(f"{name} must be {either}, got {converted!r}.")
    if isinstance(converted, tuple) and "lengths" in bounds:  # numbers, one per channel
        lengths, above = bounds["lengths"], bounds.get("above")
        if len(converted) not in lengths:
            raise ReporterError(
                f"{name} = {list(converted)} has {len(converted)} values; give "
                f"{' or '.join(str(n) for n in lengths)} (one per channel, in the model's "
                "channel order)."
            )
        if above is not None and not all(v > above for v in converted):
            what = "positive numbers" if above == 0 else f"numbers above {above}"
            raise ReporterError(f"{name} = {list(converted)} must hold {what}.")
    return converted


def _check_table(name: str, value: Any, spec: dict[str, TableKey]) -> dict[str, Any]:
    """Check a table with known keys (``[verdict]``, ``[signoff]``): every key known, every
    value of its type and in its bounds. Returns the table (ints as floats where a float is
    expected)."""
    if not isinstance(value, dict):
        raise ReporterError(
            f"{name} = {_show(value)} is {_kind(value)}; expected a table ([{name}])."
        )
    out: dict[str, Any] = {}
    for key, entry in value.items():
        if key not in spec:
            raise ReporterError(
                f"Unknown {name} key {key!r}. Valid keys of [{name}]: {', '.join(spec)}."
            )
        want = spec[key]
        ok, converted = _convert(entry, want.type)
        if not ok:
            raise ReporterError(
                f"{name}.{key} = {_show(entry)} is {_kind(entry)}; expected "
                f"{_TYPE_WORDS[want.type]}."
            )
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ReporterError(f"{name}.{key} = {_show(entry)} is not a finite number.")
        if want.type in (int, float) and (
            (want.min is not None and converted < want.min)
            or (want.max is not None and converted > want.max)
        ):
            span = (
                f"at least {want.min}" if want.max is None else f"between {want.min} and {want.max}"
            )
            raise ReporterError(
                f"{name}.{key} = {_show(entry)} is out of range; it must be {span}."
            )
        out[key] = converted
    return out


# ------------------------------------------------------------------ the [trust] table

TRUST_SETTINGS: dict[str, tuple[type, int | float, int | float, int | float | None, str]] = {
    # key: (type, default, minimum, maximum or None, what it sets)
    "drop": (float, 0.2, 0.0, 1.0, "background swap: flag when a class's recall drops by this"),
    "drop_interval_lower": (float, 0.05, 0.0, 1.0, "... with the drop interval's lower end above"),
    "changed": (float, 0.5, 0.0, 1.0, "background swap: or when this share of predictions change"),
    "changed_interval_lower": (float, 0.3, 0.0, 1.0, "... with the Wilson lower end at least"),
    "pull": (float, 0.5, 0.0, 1.0, "background swap: a class's backgrounds pull others to it"),
    "pull_interval_lower": (float, 0.25, 0.0, 1.0, "... with the Wilson lower end this far above"),
    "region_area": (float, 0.05, 0.001, 0.5, "area of the salient box searched for, of the image"),
    "max_region_area": (float, 0.10, 0.001, 1.0, "a region cue is at most this share of the image"),
    "flip": (float, 0.5, 0.0, 1.0, "region paste: flag when it flips this share beyond control"),
    "flip_interval_lower": (float, 0.25, 0.0, 1.0, "... with the Wilson lower end this far above"),
    "sanity_spearman": (float, 0.5, 0.0, 1.0, "randomization fails at this rank correlation"),
    "sanity_ssim": (float, 0.8, 0.0, 1.0, "... or at this SSIM"),
    "sanity_images": (int, 24, 2, None, "images of the randomization test"),
    "sanity_seeds": (int, 3, 1, 10, "seeds of the randomized models"),
    "faithfulness_images": (int, 32, 1, None, "images of deletion / insertion"),
    "region_images": (int, 96, 2, None, "images of the mask-free region intervention"),
    "bootstrap": (int, 1000, 100, None, "bootstrap resamples of every interval"),
    "budget_seconds": (
        float,
        120.0,
        0.0,
        None,
        "seconds the trust stage aims for; the three image counts above are scaled down "
        "together to fit (0: no limit)",
    ),
}
"""The keys of ``[trust]`` in audit.toml: type, default, bounds and meaning. The defaults are
the constants of :mod:`reporter.metrics.trust` (a test keeps them equal)."""


def check_trust(value: Any) -> dict[str, Any]:
    """Check a ``[trust]`` table; return it complete (defaults for the keys not given).

    Raises:
        ReporterError: one line for an unknown key (naming the valid ones), a value of the
            wrong type or out of its range.
    """
    if not isinstance(value, dict):
        raise ReporterError(
            f"trust = {_show(value)} is {_kind(value)}; expected a table ([trust])."
        )
    unknown = [k for k in value if k not in TRUST_SETTINGS]
    if unknown:
        raise ReporterError(
            f"Unknown [trust] key {unknown[0]!r}. Valid keys: {', '.join(TRUST_SETTINGS)}."
        )
    out: dict[str, Any] = {}
    for key, (tp, default, lo, hi, _) in TRUST_SETTINGS.items():
        v = value.get(key, default)
        ok, converted = _convert(v, tp)
        if not ok or (isinstance(converted, float) and not math.isfinite(converted)):
            raise ReporterError(
                f"trust.{key} = {_show(v)} is {_kind(v)}; expected {_TYPE_WORDS[tp]}."
            )
        if converted < lo or (hi is not None and converted > hi):
            span = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise ReporterError(f"trust.{key} = {_show(v)} is out of range; it must be {span}.")
        out[key] = converted
    if out["region_area"] > out["max_region_area"]:
        raise ReporterError(
            f"trust.region_area = {out['region_area']} is above trust.max_region_area = "
            f"{out['max_region_area']}: a region that size could never be flagged."
        )
    return out


def check_types(data: dict[str, Any]) -> None:
    """Check every known key of ``data`` (see :func:`check_value`); unknown keys are left to
    the caller."""
    schema = _schema()
    for key, value in data.items():
        if key in schema:
            check_value(key, value)


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
            table = data.pop("audit")
            both = sorted(set(table) & set(data))
            if both:
                raise ReporterError(
                    f"{path} sets {both[0]!r} both at the top level and in [audit]; keep one."
                )
            data = {**table, **data}
        try:
            check_types(data)
        except ReporterError as exc:
            raise ReporterError(f"{path}: {exc}") from None
        _resolve_paths(data, path.parent)
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
