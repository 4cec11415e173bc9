"""Checkpoints: our format, bare state_dicts, TorchScript, and the refusal of pickled modules.

Formats ``load_model`` understands:

- **reporter checkpoint**: a ``.pt`` holding ``{"format": "reporter-checkpoint", "version": 1,
  "state_dict": ..., "meta": {...}}`` (see :class:`~reporter.models.meta.ModelMeta`).
- **bare state_dict** (optionally under a ``state_dict`` or ``model_state_dict`` key, as in
  Lightning checkpoints) plus an architecture name (``--arch``). Key prefixes (``module.`` from
  DataParallel, ``model.`` from Lightning, ``_orig_mod.`` from torch.compile, or any other) are
  recognised by matching the checkpoint's keys against the model's (:func:`match_state_dict`).
- **TorchScript** archives from ``torch.jit.save`` (metadata read from an optional
  ``reporter_meta.json`` extra file).
- A **full pickled module** (``torch.save(model)``) can run arbitrary code when unpickled; it is
  refused unless the caller passes ``trust_checkpoint=True`` (``--trust-checkpoint``). Its
  preprocessing comes from a ``{"model": module, "meta": {...}}`` dict or a ``reporter_meta``
  attribute of the module, else from the caller; what nobody stated is listed in
  :attr:`LoadedModel.assumed`.

Everything except a trusted pickled module is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reporter._version import __version__
from reporter.errors import ReporterError
from reporter.models.build import build_model, default_input_size
from reporter.models.meta import ModelMeta, int_pair

__all__ = [
    "CHECKPOINT_FORMAT",
    "PREPROCESSING_KEYS",
    "LoadedModel",
    "ScriptedLogits",
    "check_state_dict",
    "load_model",
    "match_state_dict",
    "save_checkpoint",
    "weights_sha256",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "reporter-checkpoint"
_TRUST_HINT = (
    "Unpickling a full model object can run arbitrary code from the file. Save the weights "
    "instead (`torch.save(model.state_dict(), path)`, then pass --arch), or, only if you "
    "trust where the file comes from, pass --trust-checkpoint."
)


PREPROCESSING_KEYS = ("input_size", "resize", "crop", "channel_order", "grayscale", "mean", "std")
"""The preprocessing a caller can state (flags, audit.toml, ``load_model`` keywords)."""


@dataclass
class LoadedModel:
    """A model ready for inference and what we know about it.

    Attributes:
        model: The ``nn.Module`` (in eval mode, on the requested device).
        meta: Its :class:`ModelMeta`.
        source: The path or architecture name it came from.
        kind: ``"reporter"``, ``"state_dict"``, ``"torchscript"``, ``"pickle"``, ``"untrained"``
            or ``"module"`` (an in-memory model given to the Python API).
        assumed: Preprocessing keys (:data:`PREPROCESSING_KEYS`) that neither the file nor the
            caller stated, filled with conventional defaults (ImageNet mean / std, 224 px).
        notes: What loading had to work out (a key prefix stripped ...), for the report.
    """

    model: nn.Module
    meta: ModelMeta
    source: str
    kind: str
    assumed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def hookable(self) -> bool:
        """False for TorchScript, whose submodules do not run Python forward hooks."""
        return not isinstance(self.model, (torch.jit.ScriptModule, ScriptedLogits))


_LOGIT_KEYS = ("logits", "out", "output")


class ScriptedLogits(nn.Module):
    """A TorchScript model whose forward returns a tuple, list or dict, seen as returning its
    logits: the entry ``pick`` (an index, or a key such as ``"logits"`` or ``"out"``).

    Args:
        scripted: The TorchScript module.
        pick: Which entry of its output holds the ``[batch, classes]`` logits.
    """

    def __init__(self, scripted: nn.Module, pick: int | str) -> None:
        super().__init__()
        self.scripted = scripted
        self.pick = pick

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scripted(x)[self.pick]


def _logits_entry(output: Any, source: str) -> int | str | None:
    """Where the ``[batch, classes]`` logits are in a model's output (``None``: the output is
    them), or a :class:`ReporterError` that says what the model returned."""

    def is_logits(value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.dim() == 2

    if isinstance(output, torch.Tensor):
        if output.dim() == 2:
            return None
        raise ReporterError(
            f"{source}: the model returns a tensor of shape {tuple(output.shape)}; reporter audits "
            "classifiers whose output is [batch, classes] logits."
        )
    if isinstance(output, dict):
        for key in _LOGIT_KEYS:
            if is_logits(output.get(key)):
                return key
        tensors = [k for k, v in output.items() if is_logits(v)]
        if len(tensors) == 1:
            return tensors[0]
        raise ReporterError(
            f"{source}: the model returns a dict with keys {sorted(map(str, output))[:8]} and "
            f"none of {', '.join(_LOGIT_KEYS)} holds [batch, classes] logits. Export a model "
            "that returns the logits (or a dict with a 'logits' entry)."
        )
    if isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            if is_logits(value):
                return i
        raise ReporterError(
            f"{source}: the model returns a {type(output).__name__} of {len(output)} items and "
            "none is a [batch, classes] tensor of logits. Export a model that returns the logits."
        )
    raise ReporterError(
        f"{source}: the model returns a {type(output).__name__}, not a tensor of logits."
    )


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's state_dict (names, shapes, dtypes and bytes, in key order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: ModelMeta) -> Path:
    """Write a reporter checkpoint atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.reporter_version = __version__
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        # contiguous(): the CPU model may hold channels-last weights (reporter.nn.memory_format)
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": meta.to_dict(),
    }
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], arch: str) -> None:
    """Raise a readable error when ``state`` does not fit ``model``.

    The message lists missing keys, unexpected keys and shape mismatches (a few of each).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def few(items: list[str]) -> str:
        more = f" (and {len(items) - 6} more)" if len(items) > 6 else ""
        return ", ".join(items[:6]) + more

    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatches: {few(mismatched)}")
    raise ReporterError(
        f"The weights do not fit architecture {arch!r}: " + "; ".join(parts) + ". "
        "Check --arch (and --channels / the class count) matches the model that was saved."
    )


def _candidate_prefixes(have: list[str], want: list[str]) -> set[tuple[str, str]]:
    """``(strip, add)`` pairs that would turn a key of ``have`` into a key of ``want``."""
    out: set[tuple[str, str]] = set()
    want_set = set(want)
    for key in want[:8] + want[-8:]:
        for other in have:
            if other != key and other.endswith("." + key):
                out.add((other[: len(other) - len(key)], ""))
            elif key != other and key.endswith("." + other):
                out.add(("", key[: len(key) - len(other)]))
    # a prefix on both sides: strip everything up to a common tail
    for other in have[:8]:
        for cut in range(1, other.count(".") + 1):
            tail = other.split(".", cut)[-1]
            for key in want_set:
                if key.endswith("." + tail) and key != other:
                    out.add((other[: len(other) - len(tail)], key[: len(key) - len(tail)]))
                    break
    return out


def match_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Rename ``state``'s keys to the model's when they differ only by a prefix.

    Wrappers add a prefix to every key: ``module.`` (DataParallel / DistributedDataParallel),
    ``model.`` or another attribute name (a Lightning module), ``_orig_mod.`` (torch.compile),
    or several of them. Instead of a fixed list, the prefixes are found by matching the
    checkpoint's keys against the model's: a prefix to strip (and, for a model that is itself a
    wrapper, one to add) is accepted when the keys under it become exactly the model's keys.
    Keys outside the prefix (a Lightning module's loss or metric buffers) are then left out.

    Returns:
        ``(state with the model's keys, a note saying what was renamed)``, or ``(state, None)``
        unchanged when the keys already match or no prefix makes them match.
    """
    want = list(model.state_dict())
    have = list(state)
    if set(want) <= set(have):
        return state, None
    best: tuple[int, str, str] | None = None
    for strip, add in sorted(_candidate_prefixes(have, want)):
        renamed = {add + k[len(strip) :] for k in have if k.startswith(strip)}
        # every key under the prefix must be the model's: a bigger model's extra blocks
        # are not silently dropped (only keys outside the prefix, a loss's buffers, are)
        if renamed == set(want):
            outside = len(have) - len(renamed)
            if best is None or outside < best[0]:
                best = (outside, strip, add)
    if best is None:
        return state, None
    _, strip, add = best
    out = {add + k[len(strip) :]: v for k, v in state.items() if k.startswith(strip)}
    dropped = len(state) - len(out)
    parts = []
    if strip:
        parts.append(f"the key prefix {strip!r} was stripped")
    if add:
        parts.append(f"the prefix {add!r} was added")
    note = "Loading the weights: " + " and ".join(parts)
    if dropped:
        note += f"; {dropped} keys that are not the model's were left out"
    log.info(note)
    return out, note + "."


def _prefix_hint(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """A hint for keys that match nothing: the first key of each side."""
    want = next(iter(model.state_dict()), "")
    have = next(iter(state), "")
    return (
        f" The model's first key is {want!r}, the checkpoint's {have!r}: is --arch the "
        "architecture that was saved (the same class with the same arguments)?"
    )


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") for n in names) and any("code/" in n for n in names)


def _infer_from_state(state: dict[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """Guess (input channels, number of classes) from a state_dict."""
    channels = classes = None
    for tensor in state.values():
        if isinstance(tensor, torch.Tensor) and tensor.dim() == 4:
            channels = int(tensor.shape[1])
            break
    for key, tensor in reversed(list(state.items())):
        if isinstance(tensor, torch.Tensor) and key.endswith("weight") and tensor.dim() == 2:
            classes = int(tensor.shape[0])
            break
    return channels, classes


def _default_norm(channels: int) -> tuple[list[float], list[float]]:
    if channels == 3:
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return [0.5] * channels, [0.5] * channels


def _make_meta(
    arch: str,
    num_classes: int,
    channels: int,
    *,
    class_names: list[str] | None,
    input_size: tuple[int, int] | None,
    mean: list[float] | None,
    std: list[float] | None,
    arch_kwargs: dict[str, Any] | None = None,
) -> ModelMeta:
    d_mean, d_std = _default_norm(channels)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ReporterError(
            f"The model has {num_classes} outputs but {len(names)} class names were given."
        )
    return ModelMeta(
        arch=arch,
        num_classes=num_classes,
        class_names=names,
        input_size=int_pair(input_size, "input_size") if input_size else default_input_size(arch),
        channels=channels,
        mean=list(mean) if mean else d_mean,
        std=list(std) if std else d_std,
        arch_kwargs=dict(arch_kwargs or {}),
    )


def _unpickle_error(path: Path, exc: BaseException, first_global: str | None) -> str:
    """One line for a pickled model whose code cannot be found here, with the fix.

    ``first_global`` is the ``module.Class`` the safe loader refused first (the model's class).
    """
    text = _first_line(exc)
    found = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", text)
    if found:
        module, name = found.group(2), found.group(1)
    elif first_global and "." in first_global:
        module, _, name = first_global.rpartition(".")
    else:
        module, name = "", ""
    if isinstance(exc, (ModuleNotFoundError, AttributeError, ImportError)) or found:
        what = f"its class {name} (module {module})" if name else "its class"
        arch = f"{'your_module' if module in ('', '__main__') else module}:{name or 'YourModel'}"
        return (
            f"{path} is a pickled model and {what} cannot be imported here ({text}). Save the "
            "weights instead with reporter.models.save_checkpoint(path, model, "
            f'ModelMeta(arch="{arch}", ...)) or torch.save(model.state_dict(), path) and pass '
            f"--arch {arch}; or make that module importable here."
        )
    return (
        f"{path} could not be unpickled even with --trust-checkpoint "
        f"({type(exc).__name__}: {text}). The code that saved it (its classes and modules) "
        "must be importable here."
    )


def _torch_load_safe(path: Path, trust_checkpoint: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Only a pickle that names a Python class/function (a whole model object) can be
        # loaded with --trust-checkpoint; anything else is not a checkpoint at all.
        if "Unsupported global" not in str(exc) and "GLOBAL" not in str(exc):
            raise ReporterError(_not_a_checkpoint(path, exc)) from None
        if not trust_checkpoint:
            raise ReporterError(
                f"{path} holds a pickled Python object (for example a whole model saved with "
                f"torch.save(model)), not just weights. Refusing to load it. {_TRUST_HINT}"
            ) from None
        log.warning("loading %s with full unpickling (--trust-checkpoint)", path)
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001 - any failure of a user's pickle is bad input
            raise ReporterError(
                _unpickle_error(path, exc2, refused.group(1) if refused else None)
            ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to read a user's file is bad input
        raise ReporterError(_not_a_checkpoint(path, exc)) from None


def _dry_run(
    model: nn.Module, channels: int, size: tuple[int, int], path: Path, *, adapt: bool
) -> tuple[Any, int]:
    """One forward pass of a zero image; returns ``(output, channels that worked)``.

    When the model says it expects another channel count and ``adapt`` is true (nothing in the
    file says), that count is used instead: the data is then converted to it.
    """
    tried: list[int] = []
    while True:
        try:
            with torch.no_grad():
                return model(torch.zeros(1, channels, *size)), channels
        except Exception as exc:  # noqa: BLE001 - a user's model failing is bad input
            tried.append(channels)
            found = re.search(r"expected input\[[^\]]*\] to have (\d+) channels", str(exc))
            expects = int(found.group(1)) if found else None
            if adapt and expects is not None and expects not in tried:
                log.info("%s expects %d input channels, not %d", path, expects, channels)
                channels = expects
                continue
            detail = _first_line(exc)
            if expects is not None:
                detail = f"it expects {expects} input channels, not {channels}"
            raise ReporterError(
                f"{path}: the model failed on a dry run with a {channels}x{size[0]}x{size[1]} "
                f"input ({detail}). Check its input channels and size (--input-size), or store "
                "them in its reporter_meta.json."
            ) from None


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception's message (torch's unpickler hides it inside)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "empty or truncated file"


def _not_a_checkpoint(path: Path, exc: BaseException) -> str:
    return (
        f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
        f"{_first_line(exc)}). Expected a reporter checkpoint, a state_dict saved with "
        "torch.save, or a TorchScript file."
    )


def load_model(
    path_or_name: str | os.PathLike[str],
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    channels: int | None = None,
    input_size: tuple[int, int] | int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    resize: str | None = None,
    crop: float | None = None,
    channel_order: str | None = None,
    grayscale: bool | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a model from a checkpoint file, or build an untrained one by architecture name.

    Preprocessing given here (``input_size``, ``resize``, ``crop``, ``channel_order``,
    ``grayscale``, ``mean``, ``std``) is *stated*: it wins over what a checkpoint stores (with a
    warning when the two differ) and over the conventional defaults. Keys that nobody stated
    are listed in :attr:`LoadedModel.assumed`.

    Args:
        path_or_name: A checkpoint path (reporter checkpoint, state_dict, TorchScript, or a
            pickled module with ``trust_checkpoint``), or an architecture name.
        arch: Architecture for a bare state_dict (ignored for reporter checkpoints): a
            torchvision name, ``timm:NAME`` or ``package.module:factory``.
        num_classes: Class count when it cannot be read from the file.
        class_names: Class names (override those stored in the checkpoint only when the
            checkpoint has none).
        channels: Channels of the data (1 grey, 3 RGB), used when the file does not say; a
            model that takes neither 1 nor 3 channels cannot be fed images and is refused.
        input_size: ``(H, W)`` (or one side) of the model's input.
        mean: Normalisation mean, in the model's channel order.
        std: Normalisation std.
        resize: ``cover`` or ``stretch``.
        crop: Centre-crop fraction in (0, 1].
        channel_order: ``rgb`` or ``bgr``.
        grayscale: Make images grey first.
        arch_kwargs: Keyword arguments of a ``timm:`` or ``package.module:factory``
            architecture.
        trust_checkpoint: Allow full unpickling of a pickled module (runs code from the file).
        device: Where to put the model.

    Returns:
        A :class:`LoadedModel` with the model in eval mode.

    Raises:
        ReporterError: for a missing file, an unreadable or untrusted file, metadata of the
            wrong shape, weights that do not fit the architecture, a model whose output is not
            logits, or one whose input channels the data cannot be converted to.
    """
    size = (input_size, input_size) if isinstance(input_size, int) else input_size
    loaded = _load(
        path_or_name,
        arch=arch,
        num_classes=num_classes,
        class_names=class_names,
        channels=channels,
        input_size=size,
        mean=mean,
        std=std,
        arch_kwargs=arch_kwargs,
        trust_checkpoint=trust_checkpoint,
        device=device,
    )
    stated = {
        "input_size": int_pair(size, "input_size") if size else None,
        "resize": resize,
        "crop": crop,
        "channel_order": channel_order,
        "grayscale": grayscale,
        "mean": list(mean) if mean else None,
        "std": list(std) if std else None,
    }
    apply_preprocessing(loaded, stated)
    expects = loaded.meta.channels
    if channels is not None and expects not in (1, 3):
        data = "grey" if channels == 1 else "RGB"
        raise ReporterError(
            f"{loaded.source}: the model expects {expects} input channels and the data has "
            f"{channels} ({data}). reporter reads images as grey (1 channel) or RGB (3) and "
            "converts only between those two; audit a model that takes 1 or 3 channels (for "
            f"example wrap this one in a module that builds its {expects} channels from RGB)."
        )
    return loaded


def apply_preprocessing(loaded: LoadedModel, stated: dict[str, Any]) -> None:
    """Put the caller's stated preprocessing (``None`` = not stated) into ``loaded.meta``.

    A stated value wins; when the checkpoint stored another one, a warning and a note say so.

    Raises:
        ReporterError: for a mean / std whose length fits neither 1 nor the model's channels.
    """
    meta = loaded.meta
    from_file = loaded.kind in ("reporter", "torchscript-meta", "pickle-meta")
    for key in PREPROCESSING_KEYS:
        value = stated.get(key)
        if value is None:
            continue
        if key in ("mean", "std"):
            if len(value) not in (1, meta.channels):
                raise ReporterError(
                    f"--{key} has {len(value)} values; the model takes {meta.channels} channels "
                    f"(give 1 or {meta.channels} values, in the model's channel order)."
                )
            if key == "std" and not all(v > 0 for v in value):
                raise ReporterError(f"--std must be positive numbers, got {value}.")
            value = [float(v) for v in value]
        if key == "input_size":
            value = int_pair((value, value) if isinstance(value, int) else value, "input_size")
        current = getattr(meta, key)
        if from_file and key not in loaded.assumed and current != value:
            note = f"The stated {key} {value} replaces the checkpoint's {current}."
            log.warning(note)
            loaded.notes.append(note)
        setattr(meta, key, value)
        if key in loaded.assumed:
            loaded.assumed.remove(key)
    if loaded.kind == "torchscript-meta":
        loaded.kind = "torchscript"
    elif loaded.kind == "pickle-meta":
        loaded.kind = "pickle"


def _assumed(input_size: Any, mean: Any, std: Any) -> list[str]:
    """The keys a file without metadata leaves to conventions."""
    out = [] if input_size else ["input_size"]
    return out + [k for k, v in (("mean", mean), ("std", std)) if not v]


def _pickled(
    obj: Any, source: str, arch: str | None, num_classes: int | None, **stated: Any
) -> LoadedModel | None:
    """A pickled ``nn.Module`` (alone, or as ``{"model": module, "meta": {...}}``)."""
    stored: Any = None
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        stored = obj.get("meta")
        obj = obj["model"]
    if not isinstance(obj, nn.Module):
        return None
    model = obj
    stored = stored if stored is not None else getattr(model, "reporter_meta", None)
    if stored is not None:
        meta = ModelMeta.from_dict(
            stored, source=f"{source} (reporter_meta)", default_arch=type(model).__name__
        )
        return LoadedModel(model.eval(), meta, source, "pickle-meta")
    state_ch, nc = _infer_from_state(model.state_dict())
    meta = _make_meta(
        arch or type(model).__name__,
        num_classes or nc or 0,
        stated["channels"] or state_ch or 3,
        class_names=stated["class_names"],
        input_size=stated["input_size"],
        mean=stated["mean"],
        std=stated["std"],
    )
    assumed = _assumed(stated["input_size"], stated["mean"], stated["std"])
    if assumed:
        log.warning(
            "%s: a pickled model without reporter metadata; %s not stated, using %s "
            "(state them with --input-size / --mean / --std, or store a reporter_meta)",
            source,
            ", ".join(assumed),
            ", ".join(f"{k} {getattr(meta, k)}" for k in assumed),
        )
    return LoadedModel(model.eval(), meta, source, "pickle", assumed)


def _load(
    path_or_name: str | os.PathLike[str],
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    channels: int | None = None,
    input_size: tuple[int, int] | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """``load_model`` without the stated preprocessing and the final check of the channels."""
    source = str(path_or_name)
    path = Path(source)
    if not path.exists():
        looks_like_path = os.sep in source or path.suffix in {".pt", ".pth", ".ts", ".ckpt"}
        if looks_like_path:
            raise ReporterError(f"Model file not found: {source}")
        if num_classes is None:
            raise ReporterError(
                f"Building an untrained {source!r} needs the number of classes (from the data)."
            )
        ch = channels or 3
        model = build_model(source, num_classes, ch, arch_kwargs)
        meta = _make_meta(
            source,
            num_classes,
            ch,
            class_names=class_names,
            input_size=input_size,
            mean=mean,
            std=std,
            arch_kwargs=arch_kwargs,
        )
        return LoadedModel(model.eval().to(device), meta, source, "untrained")
    if path.is_dir():
        raise ReporterError(f"{source} is a folder; --model expects a checkpoint file.")
    if path.stat().st_size == 0:
        raise ReporterError(f"{source} is empty (0 bytes); it is not a checkpoint.")

    if _is_torchscript(path):
        return _load_torchscript(path, class_names, channels, input_size, mean, std, device)

    obj = _torch_load_safe(path, trust_checkpoint)
    pickled = _pickled(
        obj,
        source,
        arch,
        num_classes,
        channels=channels,
        class_names=class_names,
        input_size=input_size,
        mean=mean,
        std=std,
    )
    if pickled is not None:
        pickled.model.to(device)
        return pickled
    if not isinstance(obj, dict):
        raise ReporterError(
            f"{source} holds a {type(obj).__name__}, not a checkpoint or a state_dict."
        )
    if obj.get("format") == CHECKPOINT_FORMAT:
        if "meta" not in obj:
            raise ReporterError(
                f"{source} is a reporter checkpoint without its 'meta' (architecture, classes, "
                "preprocessing); re-save it with `reporter train` or pass the weights with --arch."
            )
        weights = obj.get("state_dict")
        if not isinstance(weights, dict) or not all(
            isinstance(v, torch.Tensor) for v in weights.values()
        ):
            raise ReporterError(
                f"{source} is a reporter checkpoint whose 'state_dict' is not a dict of tensors."
            )
        meta = ModelMeta.from_dict(obj["meta"], source=source)
        model = build_model(meta.arch, meta.num_classes, meta.channels, meta.arch_kwargs)
        weights, note = match_state_dict(model, weights)
        check_state_dict(model, weights, meta.arch)
        model.load_state_dict(weights)
        if class_names and not meta.class_names:
            meta.class_names = list(class_names)
        return LoadedModel(
            model.eval().to(device), meta, source, "reporter", notes=[note] if note else []
        )

    state = obj
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            state = obj[key]
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReporterError(
            f"{source} is a dict but not a state_dict (its values are not all tensors)."
        )
    if arch is None:
        raise ReporterError(
            f"{source} holds bare weights (a state_dict) without an architecture. Pass --arch "
            "(e.g. --arch resnet18, timm:resnet10t or my_package.models:MyNet); `reporter "
            "train` and save_checkpoint write checkpoints that remember it."
        )
    state_ch, nc = _infer_from_state(state)
    n = num_classes or nc
    if n is None:
        raise ReporterError(f"Cannot tell the class count of {source}; pass --num-classes.")
    if num_classes is not None and nc is not None and num_classes != nc:
        raise ReporterError(
            f"{source} has {nc} outputs but the data has {num_classes} classes. Use the data "
            "the model was trained on, or retrain (`reporter train`)."
        )
    in_ch = state_ch or channels or 3
    model = build_model(arch, n, in_ch, arch_kwargs)
    state, note = match_state_dict(model, state)
    try:
        check_state_dict(model, state, arch)
    except ReporterError as exc:
        raise ReporterError(str(exc) + _prefix_hint(model, state)) from None
    model.load_state_dict(state)
    meta = _make_meta(
        arch,
        n,
        in_ch,
        class_names=class_names,
        input_size=input_size,
        mean=mean,
        std=std,
        arch_kwargs=arch_kwargs,
    )
    return LoadedModel(
        model.eval().to(device),
        meta,
        source,
        "state_dict",
        _assumed(input_size, mean, std),
        [note] if note else [],
    )


def _load_torchscript(
    path: Path,
    class_names: list[str] | None,
    channels: int | None,
    input_size: tuple[int, int] | None,
    mean: list[float] | None,
    std: list[float] | None,
    device: str | torch.device,
) -> LoadedModel:
    extra = {"reporter_meta.json": ""}
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but users still ship it; loading is supported.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise ReporterError(
            f"{path} looks like TorchScript but could not be loaded: {exc}"
        ) from exc
    raw = extra["reporter_meta.json"]
    stored: Any = None
    if raw:
        try:
            stored = json.loads(raw)
        except ValueError as exc:  # bad JSON or bytes that are not UTF-8
            raise ReporterError(
                f"{path}: its reporter_meta.json is not valid JSON ({exc}). Fix it or save the "
                "model without it (class names and preprocessing then come from the data)."
            ) from None
    meta = (
        ModelMeta.from_dict(
            stored, source=f"{path} (reporter_meta.json)", default_arch="torchscript"
        )
        if stored is not None
        else None
    )
    size = (
        meta.input_size
        if meta
        else int_pair(input_size, "input_size")
        if input_size
        else (224, 224)
    )
    ch = meta.channels if meta else channels or 3
    output, ch = _dry_run(model, ch, size, path, adapt=meta is None)
    entry = _logits_entry(output, str(path))
    logits = output if entry is None else output[entry]
    outputs = int(logits.shape[-1])
    if entry is not None:
        log.info("%s returns a %s; its logits are entry %r", path, type(output).__name__, entry)
        model = ScriptedLogits(model, entry)
    if meta is not None:
        if meta.num_classes != outputs:
            raise ReporterError(
                f"{path}: reporter_meta.json says the model has {meta.num_classes} classes "
                f"({len(meta.class_names)} class names) but the model outputs {outputs}."
            )
        return LoadedModel(model.eval().to(device), meta, str(path), "torchscript-meta")
    names = class_names if class_names and len(class_names) == outputs else None
    meta = _make_meta(
        "torchscript",
        outputs,
        ch,
        class_names=names,
        input_size=size,
        mean=mean,
        std=std,
    )
    return LoadedModel(
        model.eval().to(device), meta, str(path), "torchscript", _assumed(input_size, mean, std)
    )
