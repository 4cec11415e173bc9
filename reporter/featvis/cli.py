"""``reporter featvis``: render what a layer's channels respond to, as PNG grids and a JSON index.

Thin: options -> :func:`run_featvis` (plain Python, no click) -> files. The audit pipeline calls
the same building blocks (:func:`reporter.featvis.render`, the accumulators of
:mod:`reporter.featvis.dataset_views`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from reporter.errors import ReporterError
from reporter.featvis.dataset_views import (
    ClassChannelRelevance,
    ReceptiveField,
    TopKActivations,
    activation_maps,
    filter_grid,
    layer_gradients,
    receptive_field,
)
from reporter.featvis.grids import crop, save_activation_grid, save_grid, save_image
from reporter.featvis.param import PARAMS
from reporter.featvis.render import OPTIMIZERS, RenderResult, fit_size, image_channels_of, render
from reporter.nn.hooks import ActivationRecorder, eval_mode
from reporter.nn.layers import resolve_layer, trace_layers

__all__ = ["ChannelList", "FeatvisOptions", "featvis", "parse_channels", "run_featvis"]

log = logging.getLogger(__name__)


def parse_channels(text: str) -> list[int]:
    """Parse ``"0-15"``, ``"3"`` or ``"0,4,8-11"`` into a list of channel indices.

    Raises:
        ValueError: with a readable message for anything else.
    """
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(
                f"{part!r} is not a channel or a range; write e.g. '0-15' or '0,4,8-11'."
            )
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"Range {part!r} goes backwards; write it as '{hi}-{lo}'.")
        out.extend(range(lo, hi + 1))
    return list(dict.fromkeys(out))


class ChannelList(click.ParamType):
    """Click type for channel lists such as ``0-15`` or ``0,4,8-11``."""

    name = "channels"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, list):
            return value
        try:
            return parse_channels(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _UserError(click.ClickException):
    exit_code = 2


@dataclass
class FeatvisOptions:
    """Everything ``reporter featvis`` needs, without click."""

    model: str
    layer: str
    out: Path
    channels: list[int] | None = None
    top_for_class: str | None = None
    per_class: int = 4
    data: str | None = None
    top_k: int = 9
    steps: int = 256
    size: int = 128
    seed: int = 0
    param: str = "fft"
    optimizer: str = "adam"
    lr: float = 0.05
    batch_size: int = 16
    arch: str | None = None
    trust_checkpoint: bool = False
    device: str = "cpu"
    quiet: bool = False


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "layer"


def _render_chunks(
    model: nn.Module,
    layer: str,
    channels: list[int],
    opts: FeatvisOptions,
    meta: Any,
    size: tuple[int, int],
    fixed: bool,
) -> tuple[torch.Tensor, list[RenderResult]]:
    from tqdm import tqdm

    chunks = [channels[i : i + opts.batch_size] for i in range(0, len(channels), opts.batch_size)]
    results = []
    with tqdm(
        total=opts.steps * len(chunks), desc="featvis", disable=opts.quiet, leave=False
    ) as bar:
        for chunk in chunks:
            results.append(
                render(
                    model,
                    layer,
                    channels=chunk,
                    param=opts.param,
                    size=size,
                    steps=opts.steps,
                    lr=opts.lr,
                    optimizer=opts.optimizer,
                    seed=opts.seed,
                    device=opts.device,
                    mean=meta.mean,
                    std=meta.std,
                    channel_order=meta.channel_order,  # the optimized RGB image as BGR if so
                    image_channels=meta.channels,
                    trace_size=tuple(meta.input_size),
                    fixed_size=fixed,
                    progress=lambda _step, _total: bar.update(1),
                )
            )
    return torch.cat([r.images for r in results]), results


def _class_indices(spec: str, class_names: Sequence[str]) -> list[int]:
    if spec.strip().lower() == "all":
        return list(range(len(class_names)))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part in class_names:
            out.append(list(class_names).index(part))
        elif part.isdigit() and int(part) < len(class_names):
            out.append(int(part))
        else:
            raise ReporterError(
                f"--top-for-class: unknown class {part!r}. Use 'all', class indices "
                f"0-{len(class_names) - 1} or names ({', '.join(class_names[:10])})."
            )
    return list(dict.fromkeys(out))


def _stream_data(
    model: nn.Module,
    layer: str,
    bundle: Any,
    meta: Any,
    top: TopKActivations,
    relevance: ClassChannelRelevance | None,
    opts: FeatvisOptions,
) -> None:
    from tqdm import tqdm

    from reporter.data import make_loader

    loader = make_loader(bundle.test, batch_size=64)
    for batch in tqdm(loader, desc="data", disable=opts.quiet, leave=False):
        if len(batch) == 0:
            continue
        images = batch.images.to(opts.device)
        if relevance is not None:
            acts, grads = layer_gradients(model, layer, images, batch.labels.to(opts.device))
            relevance.update(acts, grads, batch.labels)
        else:
            with eval_mode(model), ActivationRecorder(model, [layer], detach=True) as rec:
                with torch.no_grad():
                    model(images)
                acts = rec.outputs[layer]
        top.update(acts, batch.indices)


def _top_examples(
    top: TopKActivations,
    channel: int,
    bundle: Any,
    rf: ReceptiveField | None,
    path: Path,
) -> list[dict[str, Any]]:
    entries, crops = [], []
    for ex in top.examples(channel):
        unit = bundle.test.load_unit(ex.index)
        box = rf.box(ex.y, ex.x) if rf is not None else (0, 0, *unit.shape[-2:])
        crops.append(crop(unit, box))
        entries.append(
            {
                "index": ex.index,
                "value": ex.value,
                "position": [ex.y, ex.x],
                "box": list(box),
                "label": bundle.test.label(ex.index),
                "item": bundle.test.describe(ex.index),
            }
        )
    if crops:
        save_grid(crops, path)
    return entries


def run_featvis(opts: FeatvisOptions) -> dict[str, Any]:
    """Render the selected channels of one layer and write PNG grids and ``featvis.json``.

    Returns:
        The JSON index (also written to ``opts.out / "featvis.json"``).

    Raises:
        ReporterError: for bad input (unknown layer, channels out of range, missing data).
    """
    from reporter.models import load_model
    from reporter.models.meta import int_pair
    from reporter.nn.memory_format import use_channels_last

    if opts.channels is not None and opts.top_for_class is not None:
        raise ReporterError("Give either --channels or --top-for-class, not both.")
    if opts.top_for_class is not None and not opts.data:
        raise ReporterError(
            "--top-for-class ranks channels by their contribution on test images: pass --data "
            "(digits, shapes or a folder)."
        )
    if opts.steps < 1 or opts.size < 1 or opts.batch_size < 1 or opts.top_k < 1:
        raise ReporterError("--steps, --size, --batch-size and --top-k must be >= 1.")

    _check_writable(Path(opts.out))  # before minutes of rendering, not after
    bundle = None
    if opts.data:
        from reporter.data import load_dataset

        bundle = load_dataset(opts.data)
    loaded = load_model(
        opts.model,
        arch=opts.arch,
        trust_checkpoint=opts.trust_checkpoint,
        num_classes=len(bundle.class_names) if bundle is not None else None,
        class_names=list(bundle.class_names) if bundle is not None else None,
        channels=bundle.channels if bundle is not None else None,
        input_size=int_pair(bundle.input_size, "input_size") if bundle is not None else None,
        device=opts.device,
    )
    model, meta = loaded.model, loaded.meta
    in_channels = int(meta.channels or image_channels_of(model))
    input_size = int_pair(meta.input_size, "input_size")
    use_channels_last(model, (opts.batch_size, in_channels, *input_size))  # CPU only, probed
    sample = torch.zeros(1, in_channels, *input_size, device=opts.device)
    # the one resolver: unknown names, layers that never run, and in-place overwrites (said)
    info = resolve_layer(model, opts.layer, trace_layers(model, sample), need_grid=False)
    layer = info.name
    shape = info.output_shape
    if shape is None:
        raise ReporterError(f"Layer {layer!r} ({info.type}) returns no tensor; choose another.")
    n_channels = int(shape[0])
    size, fixed = fit_size(
        model, layer, opts.size, input_size, image_channels=in_channels, device=opts.device
    )
    if fixed is not None:
        log.warning(
            "featvis: rendering at the model's input size %dx%d, every transformed image "
            "resized back to it: %s.",
            *input_size,
            fixed,
        )

    top: TopKActivations | None = None
    relevance: ClassChannelRelevance | None = None
    rf: ReceptiveField | None = None
    spatial = len(shape) == 3
    class_rows: list[dict[str, Any]] = []
    if bundle is not None:
        from reporter.data.transforms import Preprocess

        bundle.set_transform(
            Preprocess(
                input_size,
                in_channels,
                meta.mean,
                meta.std,
                resize=meta.resize,
                crop=meta.crop,
                channel_order=meta.channel_order,
                grayscale=meta.grayscale,
            )
        )
        top = TopKActivations(layer, None if opts.channels is None else opts.channels, opts.top_k)
        if opts.top_for_class is not None:
            relevance = ClassChannelRelevance(len(bundle.class_names), n_channels)
        if opts.channels is not None:
            _check_channels(opts.channels, n_channels, opts.layer)
        _stream_data(model, layer, bundle, meta, top, relevance, opts)
        if spatial:
            rf = receptive_field(
                model, layer, input_size, image_channels=in_channels, device=opts.device
            )

    if relevance is not None and bundle is not None:  # relevance exists only with data
        classes = _class_indices(opts.top_for_class or "all", bundle.class_names)
        for c in classes:
            if relevance.counts[c] == 0:
                continue
            picks = relevance.top(c, opts.per_class)
            class_rows.append(
                {
                    "class": c,
                    "name": bundle.class_names[c],
                    "images": int(relevance.counts[c]),
                    "channels": [{"channel": ch, "relevance": v} for ch, v in picks],
                }
            )
        channels = list(
            dict.fromkeys(ch["channel"] for row in class_rows for ch in row["channels"])
        )
        if not channels:
            raise ReporterError("No test images in the selected classes.")
    else:
        channels = opts.channels if opts.channels is not None else list(range(min(16, n_channels)))
        _check_channels(channels, n_channels, opts.layer)

    out = Path(opts.out)
    slug = _slug(layer)
    images, results = _render_chunks(model, layer, channels, opts, meta, size, fixed is not None)
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
        initial = torch.cat([r.initial for r in results])
        final = torch.cat([r.final for r in results])
        save_grid(images, out / f"{slug}_channels.png")
        by_channel: dict[int, dict[str, Any]] = {}
        for i, ch in enumerate(channels):
            name = f"{slug}_channel_{ch}.png"
            save_image(images[i], out / name)
            entry: dict[str, Any] = {
                "channel": ch,
                "image": name,
                "objective_initial": float(initial[i]),
                "objective_final": float(final[i]),
            }
            if top is not None and bundle is not None:
                top_name = f"{slug}_channel_{ch}_top.png"
                entry["top_examples"] = _top_examples(top, ch, bundle, rf, out / top_name)
                entry["top_image"] = top_name
            by_channel[ch] = entry
        for row in class_rows:
            name = f"{slug}_class_{row['class']}.png"
            columns = [channels.index(ch["channel"]) for ch in row["channels"]]
            save_grid(images[columns], out / name, nrow=len(columns))
            row["image"] = name

        index: dict[str, Any] = {
            "model": str(opts.model),
            "layer": layer,
            "requested_layer": opts.layer,
            "layer_channels": n_channels,
            "settings": {**results[0].settings, "batch_size": opts.batch_size},
            "grid": f"{slug}_channels.png",
            "channels": [by_channel[ch] for ch in channels],
        }
        module = dict(model.named_modules()).get(opts.layer)
        if isinstance(module, nn.Conv2d):
            save_image(filter_grid(module), out / f"{slug}_filters.png")
            index["filters"] = f"{slug}_filters.png"
        if rf is not None:
            index["receptive_field"] = rf.to_dict()
        if class_rows:
            index["classes"] = class_rows
        if bundle is not None:
            index["data"] = {"name": bundle.name, "test_images": top.seen if top else 0}
            if spatial and len(bundle.test):
                maps = activation_maps(model, bundle.test[0][0].to(opts.device), [layer])[layer]
                name = f"{slug}_activations_0.png"
                save_activation_grid(maps, out / name)
                index["activation_maps"] = {"index": 0, "image": name}
        (out / "featvis.json").write_text(json.dumps(index, indent=2))
        log.info("featvis: wrote %d channel images to %s", len(channels), out)
        return index


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn a failure to write into ``out`` (read-only, full, no permission) into one line."""
    try:
        yield
    except OSError as exc:
        raise ReporterError(_cannot_write(out, exc)) from None


def _cannot_write(out: Path, exc: OSError) -> str:
    reason = {
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    where = exc.filename or out
    return f"Cannot write to {where} ({reason}). Choose another --out."


def _check_writable(out: Path) -> None:
    """Create ``out`` and write a probe file in it, or raise a one-line ReporterError."""
    if out.exists() and not out.is_dir():
        raise ReporterError(f"--out {out} is a file; give a folder for the images.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".featvis-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ReporterError(_cannot_write(out, exc)) from None


def _check_channels(channels: Sequence[int], n_channels: int, layer: str) -> None:
    bad = [c for c in channels if not 0 <= c < n_channels]
    if bad:
        raise ReporterError(
            f"Channel {bad[0]} is out of range: layer {layer!r} has {n_channels} channels "
            f"(0-{n_channels - 1})."
        )


@click.command("featvis")
@click.argument("model")
@click.option("--layer", required=True, help="Dotted layer name (see `reporter layers MODEL`).")
@click.option(
    "--channels",
    type=ChannelList(),
    default=None,
    help="Channels to render, e.g. 0-15 or 0,4,8-11 (default: the first 16).",
)
@click.option(
    "--top-for-class",
    default=None,
    help="'all' or class names/indices: render the channels that drive each class (needs --data).",
)
@click.option("--per-class", default=4, show_default=True, help="Channels per class.")
@click.option("--data", default=None, help="digits, shapes or a folder: top dataset examples.")
@click.option("--top-k", default=9, show_default=True, help="Dataset examples per channel.")
@click.option("--steps", default=256, show_default=True, help="Optimization steps.")
@click.option("--size", default=128, show_default=True, help="Image size in pixels.")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**63 - 1),
    default=0,
    show_default=True,
    help="Seed: same seed, same images.",
)
@click.option("--param", type=click.Choice(PARAMS), default="fft", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option("--lr", default=0.05, show_default=True, help="Learning rate (step size).")
@click.option("--batch-size", default=16, show_default=True, help="Channels rendered at once.")
@click.option("--arch", default=None, help="Architecture, for a checkpoint of bare weights.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow loading a pickled full model.")
@click.option("--device", default="cpu", show_default=True)
@click.option("-q", "--quiet/--no-quiet", default=False, help="No progress bars.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Folder for PNGs and JSON."
)
def featvis(model: str, **kwargs: Any) -> None:
    """Render what the channels of one layer of MODEL respond to (activation maximization).

    Writes one PNG per channel, a grid, top dataset examples (with --data) and featvis.json.
    """
    opts = FeatvisOptions(model=model, out=Path(kwargs.pop("out")), **kwargs)
    try:
        index = run_featvis(opts)
    except ReporterError as exc:
        raise _UserError(str(exc)) from None
    click.echo(f"Wrote {len(index['channels'])} channel images to {opts.out}")
