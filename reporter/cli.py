"""The ``reporter`` command line: thin commands that turn options into calls of the library.

Errors a user can cause are :class:`~reporter.errors.ReporterError` and print as one clear
``Error: ...`` line with exit status 2; Ctrl-C, SIGTERM and SIGHUP exit with status 130 / 143 /
129 after the library has cleaned up its temporary files, with a line that says whether the
previous report was left unchanged or the new one had already been written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reporter._version import __version__
from reporter.errors import ReporterError

__all__ = ["cli", "main"]

log = logging.getLogger("reporter")

F = TypeVar("F", bound=Callable[..., Any])


class _Terminated(BaseException):
    """Raised from the SIGTERM / SIGHUP handler so ``finally`` blocks run.

    A ``BaseException`` (like ``KeyboardInterrupt``): no ``except Exception`` in the library
    (a model's dry run, a decoder guard) may swallow it and report it as a bad input.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: Any) -> None:
    raise _Terminated(signum)


# keyed by plain int: the handler receives (and _Terminated carries) the signal number
_STOP_WORDS: dict[int, str] = {signal.SIGTERM: "Terminated", signal.SIGHUP: "Hung up"}


def _stopped(ctx: click.Context, word: str, published_before: int) -> str:
    """A truthful line about what an interrupted command left behind."""
    from reporter.outdir import PUBLISHED

    if len(PUBLISHED) > published_before:
        return f"{word}: stopped after the new report was written to {PUBLISHED[-1]}."
    if ctx.invoked_subcommand == "audit":
        return f"{word}: stopped; the previous report was left unchanged."
    return f"{word}: stopped."


class ReporterGroup(click.Group):
    """A click group that turns user errors and interruptions into clean exits."""

    def invoke(self, ctx: click.Context) -> Any:
        from reporter.outdir import PUBLISHED

        published_before = len(PUBLISHED)
        previous = {sig: signal.signal(sig, _on_signal) for sig in _STOP_WORDS}
        try:
            return super().invoke(ctx)
        except ReporterError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo(_stopped(ctx, "Interrupted", published_before), err=True)
            ctx.exit(130)
        except _Terminated as exc:
            word = _STOP_WORDS.get(exc.signum, "Terminated")
            click.echo(_stopped(ctx, word, published_before), err=True)
            ctx.exit(128 + exc.signum)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Seed(click.ParamType):
    """A seed: an integer in [0, 2**63 - 1] (what torch, NumPy and Python all accept)."""

    name = "seed"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        from reporter.config import check_value

        try:
            return check_value("seed", int(value) if isinstance(value, str) else value)
        except (ValueError, ReporterError) as exc:
            self.fail(f"{value!r} is not a seed: {exc}", param, ctx)


class LearningRate(click.ParamType):
    """A learning rate: a finite number above 0."""

    name = "lr"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from reporter.config import check_value

        try:
            return check_value("lr", float(value) if isinstance(value, str) else value)
        except (ValueError, ReporterError) as exc:
            self.fail(f"{value!r} is not a learning rate: {exc}", param, ctx)


class FeatvisSize(click.ParamType):
    """The render size of feature visualization: ``auto`` or a positive integer (pixels)."""

    name = "auto|pixels"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        from reporter.config import check_value

        text = str(value).strip()
        try:
            return check_value("featvis_size", int(text) if text.lstrip("+-").isdigit() else text)
        except ReporterError:
            self.fail(f"{text!r}: give auto or a number of pixels (at least 1).", param, ctx)


class IntRange(click.ParamType):
    """Channels as ``0-7``, ``0,3,5`` or ``0-3,8``."""

    name = "channels"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[int]:
        if isinstance(value, list):
            return value
        out: list[int] = []
        try:
            for part in str(value).split(","):
                part = part.strip()
                if not part:
                    continue
                if "-" in part:
                    lo, hi = part.split("-", 1)
                    out.extend(range(int(lo), int(hi) + 1))
                else:
                    out.append(int(part))
        except ValueError:
            self.fail(f"{value!r} is not a channel list like 0-7 or 0,3,5", param, ctx)
        if not out or min(out) < 0:
            self.fail(f"{value!r} is not a channel list like 0-7 or 0,3,5", param, ctx)
        return out


def _setup_logging(verbose: int, quiet: bool) -> None:
    """Warnings from everyone; ``-v`` / ``-vv`` raise only reporter's own loggers to info /
    debug (never matplotlib's font manager or PIL's); ``-q`` keeps reporter's warnings."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    own = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.getLogger("reporter").setLevel(logging.WARNING if quiet and not verbose else own)


def _verbosity_callback(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    """A subcommand's ``-v`` adds to the group's (``reporter -v audit -v`` = ``-vv``)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    total = int(root.obj.get("verbose", 0)) + int(value or 0)
    if value:
        root.obj["verbose"] = total
        _setup_logging(total, quiet=False)
    return total


def _quiet_callback(ctx: click.Context, _param: click.Parameter, value: bool | None) -> Any:
    if value:
        root = ctx.find_root()
        root.ensure_object(dict)
        _setup_logging(int(root.obj.get("verbose", 0)), quiet=True)
    return value


VERBOSE_HELP = "More log output: -v info, -vv debug (reporter's own loggers only)."
QUIET_HELP = "No progress bars or stage lines; --no-quiet undoes a config's quiet = true."


def _add_conventions(command: click.Command) -> None:
    """Give a subcommand ``-v/--verbose`` and ``-q/--quiet/--no-quiet`` when it lacks them
    (the commands of every engineer follow the same conventions)."""
    names = {opt for p in command.params for opt in getattr(p, "opts", [])}
    if "-v" not in names and "--verbose" not in names:
        command.params.append(
            click.Option(
                ["-v", "--verbose"],
                count=True,
                show_default=False,
                expose_value=False,
                callback=_verbosity_callback,
                help=VERBOSE_HELP,
            )
        )
    if "-q" not in names and "--quiet" not in names:
        command.params.append(
            click.Option(
                ["-q", "--quiet/--no-quiet"],
                default=None,
                expose_value=False,
                callback=_quiet_callback,
                help=QUIET_HELP,
            )
        )


def _quiet_option(default: bool | None = False):
    """``-q/--quiet/--no-quiet`` for a command that turns its progress bars off itself."""
    return click.option(
        "-q",
        "--quiet/--no-quiet",
        default=default,
        show_default=default is not None,
        callback=_quiet_callback,
        help=QUIET_HELP,
    )


@click.group(
    cls=ReporterGroup,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(__version__, prog_name="reporter")
@click.option("-v", "--verbose", count=True, show_default=False, help=VERBOSE_HELP)
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Audit a PyTorch image classifier and write a report people can read.

    Run `reporter audit` with no arguments for the built-in demo.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose, quiet=False)


class Numbers(click.ParamType):
    """Comma-separated numbers (``0.485,0.456,0.406``), checked like the config key ``key``."""

    name = "numbers"

    def __init__(self, key: str) -> None:
        self.key = key

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        from reporter.config import check_value

        if isinstance(value, tuple):
            return value
        try:
            return check_value(self.key, value)
        except ReporterError as exc:
            self.fail(str(exc), param, ctx)


class Fraction(click.ParamType):
    """The centre-crop fraction: a number in (0, 1]."""

    name = "fraction"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from reporter.config import check_value

        try:
            return check_value("crop", float(value) if isinstance(value, str) else value)
        except (ValueError, ReporterError) as exc:
            self.fail(f"{value!r} is not a crop fraction: {exc}", param, ctx)


#: How the preprocessing options' defaults read for a command that loads a model.
FROM_CHECKPOINT = {
    "input_size": "from the checkpoint, else 224",
    "resize": "from the checkpoint, else cover",
    "crop": "from the checkpoint, else 1",
    "mean": "from the checkpoint, else ImageNet's",
    "std": "from the checkpoint, else ImageNet's",
    "channel_order": "from the checkpoint, else rgb",
    "grayscale": "from the checkpoint, else no",
}
#: ... for ``audit``, which may also train the model (then as ``train`` does).
FROM_CHECKPOINT_OR_TRAINING = {
    **FROM_CHECKPOINT,
    "input_size": "from the checkpoint, else 224; when the audit trains: as train",
    "mean": "from the checkpoint, else ImageNet's; when the audit trains: as train",
    "std": "from the checkpoint, else ImageNet's; when the audit trains: as train",
}
#: ... and for ``train``, whose checkpoint then stores them.
FOR_TRAINING = {
    "input_size": "the data's size for gapnet, else the architecture's",
    "resize": "cover",
    "crop": "1",
    "mean": "measured on the training images",
    "std": "measured on the training images",
    "channel_order": "rgb",
    "grayscale": "no",
}


def _preprocessing_options(defaults: dict[str, str]) -> Callable[[F], F]:
    """The stated preprocessing, one definition for every command: --input-size, --resize,
    --crop, --mean, --std, --channel-order, --grayscale (``None`` = not stated).

    Args:
        defaults: What applies when an option is not given, as the help shows it (one of
            :data:`FROM_CHECKPOINT`, :data:`FROM_CHECKPOINT_OR_TRAINING`, :data:`FOR_TRAINING`).
    """
    options = [
        click.option(
            "--input-size",
            type=click.IntRange(min=1),
            default=None,
            show_default=defaults["input_size"],
            help="Model input side in pixels.",
        ),
        click.option(
            "--resize",
            type=click.Choice(["cover", "stretch"]),
            default=None,
            show_default=defaults["resize"],
            help="cover: keep the aspect ratio and centre-crop; stretch: scale each side.",
        ),
        click.option(
            "--crop",
            type=Fraction(),
            default=None,
            show_default=defaults["crop"],
            help="Centre-crop fraction in (0, 1]: 0.875 = resize to 256, crop 224.",
        ),
        click.option(
            "--mean",
            type=Numbers("mean"),
            default=None,
            show_default=defaults["mean"],
            help="Normalisation mean, one value or one per channel (model's channel order).",
        ),
        click.option(
            "--std",
            type=Numbers("std"),
            default=None,
            show_default=defaults["std"],
            help="Normalisation std, one value or one per channel: 0.229,0.224,0.225.",
        ),
        click.option(
            "--channel-order",
            type=click.Choice(["rgb", "bgr"]),
            default=None,
            show_default=defaults["channel_order"],
            help="Channel order the model was trained with.",
        ),
        click.option(
            "--grayscale/--no-grayscale",
            default=None,
            show_default=defaults["grayscale"],
            help="Make images grey before the model sees them.",
        ),
    ]

    def decorate(f: F) -> F:
        for option in reversed(options):  # click lists them in the order above
            f = option(f)
        return f

    return decorate


def _stated(options: dict[str, Any]) -> dict[str, Any]:
    """Pop the preprocessing options into the ``preprocessing`` dict of :func:`prepare`."""
    keys = ("resize", "crop", "mean", "std", "channel_order", "grayscale")
    out = {k: options.pop(k, None) for k in keys}
    for key in ("mean", "std"):
        if out[key] is not None:
            out[key] = list(out[key])
    return out


def _model_options(f):
    f = _preprocessing_options(FROM_CHECKPOINT)(f)
    f = click.option(
        "--arch",
        default=None,
        show_default="from the checkpoint",
        help="Architecture of a bare state_dict: a torchvision name, timm:NAME or "
        "package.module:factory.",
    )(f)
    f = click.option(
        "--trust-checkpoint",
        is_flag=True,
        help="Allow loading a pickled model object (runs code from the file; trusted files only).",
    )(f)
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda.")(f)
    return f


@cli.command()
@click.option("--data", default="digits", show_default=True, help="digits, shapes or a folder.")
@click.option("--train-data", type=click.Path(), default=None, help="Explicit training folder.")
@click.option("--test-data", type=click.Path(), default=None, help="Explicit test folder.")
@click.option("--arch", default="gapnet", show_default=True, help="gapnet or a torchvision name.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--lr", type=LearningRate(), default=3e-3, show_default=True, help="Peak rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=Seed(), default=0, show_default=True)
@_preprocessing_options(FOR_TRAINING)
@click.option(
    "--init",
    "init",
    type=click.Path(),
    default=None,
    help="Start from this checkpoint (the head is replaced if the class count differs).",
)
@click.option("--freeze", default=None, help="Train only the layers after this layer name.")
@click.option(
    "--spurious",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="shapes only: probability that the background colour gives the class away.",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(), default="model.pt", show_default=True)
@_quiet_option()
def train(
    data: str,
    train_data: str | None,
    test_data: str | None,
    arch: str,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    input_size: int | None,
    init: str | None,
    freeze: str | None,
    spurious: float,
    device: str,
    out: str,
    quiet: bool,
    **preprocessing: Any,
) -> None:
    """Train a classifier and save a checkpoint with its metadata.

    The preprocessing options apply to the training and the test images, and the checkpoint
    stores them: `reporter audit --model OUT` then uses them without the flags.

    Example: reporter train --data digits --arch gapnet --epochs 3 --out model.pt
    """
    from reporter.data import Preprocess, load_dataset
    from reporter.data.transforms import preprocessing_summary
    from reporter.metrics import classification_metrics
    from reporter.models import save_checkpoint
    from reporter.nn.device import resolve_device
    from reporter.predict import predict
    from reporter.train import TrainConfig
    from reporter.train import train as run_train

    dev = resolve_device(device)
    bundle = load_dataset(
        data, seed=seed, train_path=train_data, test_path=test_data, spurious=spurious
    )
    cfg = TrainConfig(
        arch=arch,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        input_size=(input_size, input_size) if input_size else None,
        init=init,
        freeze=freeze,
        device=str(dev),
        **_stated(preprocessing),
    )
    result = run_train(bundle, cfg, progress=not quiet)
    train_split = bundle.train
    if train_split is None:  # run_train has raised already; this tells the type checker
        raise ReporterError("Training needs a training split (--data FOLDER or --train-data).")
    meta = result.loaded.meta
    pre = Preprocess.from_meta(meta)  # the training's preprocessing, for the test images too
    bundle.set_transform(pre)
    preds = predict(result.loaded.model, bundle.test, device=dev, progress=not quiet)
    metrics = classification_metrics(preds.probs, preds.labels, bundle.class_names)
    meta.extra["test_accuracy"] = metrics["accuracy"]
    path = save_checkpoint(out, result.loaded.model, meta)
    skipped = len(bundle.skipped) + len(result.skipped) + len(preds.skipped)
    click.echo(
        f"Trained {arch} on {bundle.name} ({len(train_split)} images, {epochs} epochs, "
        f"{result.seconds:.1f} s; preprocessing {preprocessing_summary(pre.describe())}). "
        f"Test accuracy {metrics['accuracy']:.1%} on "
        f"{metrics['n_images']} images."
        + (f" Skipped {skipped} unreadable files." if skipped else "")
    )
    click.echo(f"Saved {path}")


def _format_metrics(metrics: dict[str, Any], class_names: list[str]) -> str:
    lines = [
        f"images      {metrics['n_images']}",
        f"accuracy    {metrics['accuracy']:.2%}",
    ]
    if "top5_accuracy" in metrics:
        lines.append(f"top-5       {metrics['top5_accuracy']:.2%}")
    lines += [f"macro F1    {metrics['macro_f1']:.3f}", f"ECE (15)    {metrics['ece']:.3f}", ""]
    width = max(8, *(len(n) for n in class_names))
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for row in metrics["per_class"]:
        lines.append(
            f"{row['class']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
            f"{row['f1']:5.3f}  {row['support']:7d}"
        )
    return "\n".join(lines)


@cli.command()
@click.argument("model")
@click.option("--data", default="digits", show_default=True, help="digits, shapes or a folder.")
@click.option(
    "--split",
    type=click.Choice(["all", "test"]),
    default="all",
    show_default=True,
    help="For a folder: predict all images, or only the held-out test split.",
)
@click.option(
    "--json",
    "json_out",
    default=None,
    help="Write the metrics as JSON to this path ('-' for stdout).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--seed", type=Seed(), default=0, show_default=True)
@_quiet_option()
@_model_options
def predict(
    model: str,
    data: str,
    split: str,
    json_out: str | None,
    batch_size: int,
    seed: int,
    quiet: bool,
    arch: str | None,
    trust_checkpoint: bool,
    device: str,
    input_size: int | None,
    **preprocessing: Any,
) -> None:
    """Predict over a data set and print accuracy, per-class metrics and calibration."""
    from reporter.data.transforms import size_mismatch_hint
    from reporter.metrics import classification_metrics
    from reporter.nn.device import model_device
    from reporter.predict import predict as run_predict
    from reporter.setup import prepare

    prep = prepare(
        model=model,
        data=data,
        arch=arch,
        split=split,
        seed=seed,
        trust_checkpoint=trust_checkpoint,
        device=device,
        input_size=input_size,
        progress=not quiet,
        preprocessing=_stated(preprocessing),
    )
    preds = run_predict(
        prep.loaded.model,
        prep.bundle.test,
        batch_size=batch_size,
        device=model_device(prep.loaded.model),
        progress=not quiet,
    )
    names = prep.loaded.meta.class_names
    metrics = classification_metrics(
        preds.probs, preds.labels, names, nonfinite_inputs=preds.nonfinite_inputs
    )
    skipped = prep.bundle.skipped + preds.skipped
    metrics["skipped"] = skipped
    metrics["preprocessing"] = prep.preprocess.describe()
    hint = size_mismatch_hint(
        int((preds.preds == preds.labels).sum()),
        len(preds.labels),
        len(names),
        prep.bundle.input_size,
        prep.loaded.meta.input_size,
        stated="input_size" not in prep.loaded.assumed,
    )
    if hint:
        log.warning(hint)
    if json_out == "-":
        click.echo(json.dumps(metrics, indent=2))
        return
    for note in prep.notes:
        click.echo(note)
    click.echo(_format_metrics(metrics, names))
    if skipped:
        click.echo(f"\nSkipped {len(skipped)} files:")
        for item in skipped[:10]:
            click.echo(f"  {item['path']}: {item['reason']}")
        if len(skipped) > 10:
            click.echo(f"  ... and {len(skipped) - 10} more (see --json)")
    if json_out:
        Path(json_out).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        click.echo(f"Wrote {json_out}")


@cli.command()
@click.argument("model")
@click.option("--num-classes", type=int, default=None, help="For an architecture name.")
@click.option("--channels", type=int, default=None, help="Input channels (if not stored).")
@click.option("--all", "show_all", is_flag=True, help="Also list containers, not only leaves.")
@_model_options
def layers(
    model: str,
    num_classes: int | None,
    channels: int | None,
    show_all: bool,
    arch: str | None,
    trust_checkpoint: bool,
    device: str,
    input_size: int | None,
    **preprocessing: Any,
) -> None:
    """List the model's layers with output shapes; '*' marks layers usable for CAMs."""
    import torch

    from reporter.models import load_model
    from reporter.nn.layers import auto_layer_choice, trace_layers

    loaded = load_model(
        model,
        arch=arch,
        num_classes=num_classes if num_classes or Path(model).exists() else 10,
        channels=channels,
        input_size=(input_size, input_size) if input_size else None,
        trust_checkpoint=trust_checkpoint,
        **_stated(preprocessing),
    )
    if not loaded.hookable:
        raise ReporterError(
            "This is a TorchScript model: its layers cannot be hooked, so CAMs and layer "
            "listing need the original nn.Module (save a state_dict and pass --arch)."
        )
    meta = loaded.meta
    sample = torch.zeros(1, meta.channels, *meta.input_size)
    infos = trace_layers(loaded.model, sample)
    leaves = {n for n, m in loaded.model.named_modules() if not any(True for _ in m.children())}
    auto, why = auto_layer_choice(infos)
    click.echo(
        f"{meta.arch}: input {meta.channels}x{meta.input_size[0]}x{meta.input_size[1]}, "
        f"{meta.num_classes} classes. '*' = usable for CAMs; auto = {why}"
    )
    width = max(len(i.name) for i in infos)
    for info in infos:
        if not show_all and info.name not in leaves and info.name != auto:
            continue
        shape = "x".join(str(s) for s in info.output_shape) if info.output_shape else "-"
        mark = "*" if info.cam_ready else " "
        note = "  <- auto" if info.name == auto else ""
        if info.overwritten_by:
            note += f"  (overwritten in place by {info.overwritten_by})"
        if info.calls > 1:
            note += f"  (runs {info.calls}x)"
        click.echo(f"{mark} {info.name:<{width}}  {info.type:<20} {shape}{note}")


@cli.command()
@click.option("--model", default=None, help="Checkpoint path, or an architecture to train.")
@click.option("--arch", default=None, help="Architecture of a bare state_dict / to train.")
@click.option("--data", default=None, help="digits, shapes, shapes-spurious or a folder.")
@click.option("--train-data", type=click.Path(), default=None)
@click.option("--test-data", type=click.Path(), default=None)
@click.option(
    "--split",
    type=click.Choice(["all", "test"]),
    default=None,
    help="With --model and a folder: audit all images or the test split.",
)
@click.option("--masks", type=click.Path(), default=None, help="Object masks folder.")
@click.option("--methods", default=None, help="Comma-separated CAM methods.")
@click.option("--layers", default=None, help="Comma-separated layer names or 'auto'.")
@click.option("--featvis-layers", default=None, help="Layers to visualise ('auto', names).")
@click.option("--featvis-channels", type=int, default=None, help="Channels per layer.")
@click.option("--featvis-steps", type=int, default=None, help="Optimisation steps.")
@click.option(
    "--featvis-size",
    type=FeatvisSize(),
    default=None,
    show_default="auto",
    help="Render size: auto (the input size, at most 128 px on the longer side) or pixels.",
)
@click.option("--samples-per-class", type=int, default=None, help="Images per gallery row.")
@click.option("--trust-samples", type=int, default=None, help="Images for the trust metrics.")
@click.option(
    "--trust-budget",
    type=click.FloatRange(min=0),
    default=None,
    show_default="120, [trust] budget_seconds",
    help="Seconds the trust checks aim for: their image counts are scaled down to fit on a "
    "slow model (0: no limit).",
)
@click.option(
    "--formats",
    "--format",
    "formats",
    default=None,
    help="Comma-separated: html,pdf,json,modelcard.",
)
@click.option("--out", default=None, help="Output folder.")
@click.option("--config", "config_path", type=click.Path(), default=None, help="TOML config.")
@click.option("--template-dir", type=click.Path(), default=None, help="Override templates.")
@click.option(
    "--colormap", default=None, help="Heatmap colormap (colour-blind safe: viridis, cividis)."
)
@click.option("--pdf-variant", default=None, help="PDF variant, e.g. pdf/a-3b or pdf/ua-1.")
@click.option("--device", default=None, help="auto, cpu, cuda.")
@click.option("--seed", type=int, default=None)
@click.option("--epochs", type=int, default=None, help="Training epochs if it trains.")
@click.option("--lr", type=float, default=None, help="Training learning rate if it trains.")
@click.option("--batch-size", type=int, default=None, help="Batch size (training and audit).")
@click.option("--top-k", type=int, default=None, help="Top-activating examples per channel.")
@_preprocessing_options(FROM_CHECKPOINT_OR_TRAINING)
@click.option("--trust-checkpoint", is_flag=True, default=None)
@click.option("--spurious", type=float, default=None, help="shapes: background shortcut P.")
@click.option(
    "--shortcut",
    type=click.Choice(["absent", "kept"]),
    default=None,
    help="shapes test split: shortcut absent or kept.",
)
@click.option("--max-images", type=int, default=None, help="Audit at most N test images.")
@_quiet_option(default=None)
@click.option(
    "--cache-dir", type=click.Path(), default=None, help="Where trained models are cached."
)
@click.option(
    "--previous",
    type=click.Path(),
    default=None,
    help="An earlier bundle: say what changed since it (report, model card changelog).",
)
# scale (docs/scale.rst)
@click.option(
    "--workers", type=int, default=None, help="Data loader processes (default: from CPU count)."
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default=None,
    help="Autocast for the pass (GPU; checked against fp32 on the first batch).",
)
@click.option(
    "--json",
    "json_out",
    default=None,
    show_default="not written",
    help="Write the run's summary as JSON to this path ('-' for stdout; the line for people "
    "then goes to stderr).",
)
def audit(config_path: str | None, json_out: str | None, **options: Any) -> None:
    """Audit a model and write report.html, report.pdf and audit.json.

    With no arguments: train (or reuse) gapnet on the digits data and audit it.
    """
    from reporter.audit import run_audit
    from reporter.config import load_config

    for key in ("mean", "std"):
        if options.get(key) is not None:
            options[key] = list(options[key])
    budget = options.pop("trust_budget", None)
    overrides = {k: v for k, v in options.items() if v is not None}
    config = load_config(config_path, overrides)
    if budget is not None:  # one key of the [trust] table, the others kept
        config = dataclasses.replace(config, trust={**config.trust, "budget_seconds": budget})
        overrides["trust_budget"] = budget
    result = run_audit(config, argv=_audit_command(config_path, overrides))
    if not result.paths:  # a process of a torchrun job other than rank 0
        click.echo(f"Done: {result.summary}.")
        return
    paths = ", ".join(str(p) for p in result.paths.values())
    line = f"Audited {result.summary}. Wrote {paths} in {result.seconds:.1f} s."
    click.echo(line, err=json_out == "-")
    if json_out:
        text = json.dumps(_summary_json(result), indent=2)
        if json_out == "-":
            click.echo(text)
        else:
            Path(json_out).write_text(text + "\n", encoding="utf-8")


def _summary_json(result: Any) -> dict[str, Any]:
    """What ``audit --json`` prints: the numbers a CI job acts on, and where the files are."""
    audit = result.audit
    verdict = audit.get("verdict") or {}
    return {
        "summary": result.summary,
        "verdict": verdict.get("level") if isinstance(verdict, dict) else verdict,
        "accuracy": audit["metrics"]["accuracy"],
        "images": audit["dataset"]["audited_images"],
        "findings": [
            {"id": f.get("id"), "severity": f.get("severity")} if isinstance(f, dict) else f
            for f in audit.get("findings", [])
        ],
        "preprocessing": audit.get("preprocessing"),
        "paths": {kind: str(path) for kind, path in result.paths.items()},
        "seconds": round(result.seconds, 3),
    }


def _audit_command(config_path: str | None, overrides: dict[str, Any]) -> list[str]:
    """The ``reporter audit`` command line equivalent to this run (for the report)."""
    argv = ["reporter", "audit"]
    if config_path:
        argv += ["--config", str(config_path)]
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool) and key in ("quiet", "grayscale"):
            argv.append(flag if value else f"--no-{key}")
        elif value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(str(v) for v in value)]
        elif value is not False:
            argv += [flag, str(value)]
    return argv


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--formats",
    "--format",
    "formats",
    default="html,pdf,modelcard",
    show_default=True,
    help="Comma-separated: html, pdf, modelcard.",
)
@click.option("--template-dir", type=click.Path(), default=None, help="Override templates.")
@click.option("--out", default=None, help="Write into this folder instead of BUNDLE.")
@click.option("--pdf-variant", default=None, help="PDF variant (default: the audit's pdf_variant).")
def render(
    bundle: str, formats: str, template_dir: str | None, out: str | None, pdf_variant: str | None
) -> None:
    """Render report.html, report.pdf and MODEL_CARD.md again from a bundle.

    BUNDLE is the --out folder of a `reporter audit` run (audit.json and artifacts/). No model
    or data is needed. With --out, the bundle is copied there with the new reports.
    """
    from reporter.report.writer import REPORT_FORMATS, render_bundle

    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in REPORT_FORMATS]
    if unknown or not wanted:
        raise click.BadParameter(
            f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(REPORT_FORMATS)}.",
            param_hint="--formats",
        )
    start = time.perf_counter()
    paths = render_bundle(
        bundle, out=out, formats=wanted, template_dir=template_dir, pdf_variant=pdf_variant
    )
    written = ", ".join(str(p) for p in paths.values())
    click.echo(f"Rendered {written} in {time.perf_counter() - start:.1f} s.")


# --- comparisons: `reporter compare` and `reporter history` (docs/compare.rst) ---


def _report_formats(formats: str) -> list[str]:
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in wanted if f not in ("html", "pdf", "json")]
    if bad:
        raise click.BadParameter(f"{bad[0]}: choose from html, pdf, json.", param_hint="--format")
    return wanted


@cli.command()
@click.argument("old", type=click.Path(file_okay=False))
@click.argument("new", type=click.Path(file_okay=False))
@click.option("--out", default="compare", show_default=True, help="Output folder.")
@click.option(
    "--fail-on",
    default=None,
    help='Gates, e.g. "accuracy<-0.01, ece>+0.02, sanity:fail, shortcut:new, drift>0.3": '
    "exit 1 when one holds.",
)
@click.option(
    "--format", "formats", default="html,pdf,json", show_default=True, help="html, pdf, json."
)
@click.option("--template-dir", type=click.Path(), default=None, help="Override templates.")
@click.option("--seed", type=Seed(), default=0, show_default=True, help="Bootstrap seed.")
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the intervals (0: none).",
)
@click.pass_context
def compare(
    ctx: click.Context,
    old: str,
    new: str,
    out: str,
    fail_on: str | None,
    formats: str,
    template_dir: str | None,
    seed: int,
    bootstrap: int,
) -> None:
    """Compare two audit bundles: what changed from OLD to NEW.

    Writes compare.json, report.html and report.pdf to --out. Needs only the two bundles (no
    model, no data). Exit status: 0 when every --fail-on gate passes, 1 when one fails, 2 for
    bad input.
    """
    from reporter.compare import compare as compare_audits
    from reporter.compare import load_bundle, parse_gates
    from reporter.report.compare import write_comparison

    wanted = _report_formats(formats)
    gates = parse_gates(fail_on) if fail_on else []
    start = time.perf_counter()
    result, arrays = compare_audits(
        load_bundle(old), load_bundle(new), gates=gates, seed=seed, reps=bootstrap
    )
    paths = write_comparison(result, arrays, out, formats=wanted, template_dir=template_dir)
    for gate in result["gates"]:
        click.echo(gate["message"])
    failed = [g for g in result["gates"] if g["failed"]]
    written = ", ".join(str(p) for p in paths.values())
    click.echo(
        f"Compared {result['matching']['compared']} shared images: {result['level']}. "
        f"Wrote {written} in {time.perf_counter() - start:.1f} s."
    )
    if failed:
        click.echo(f"{len(failed)} of {len(gates)} gates failed.", err=True)
        ctx.exit(1)


@cli.command()
@click.argument("bundles", nargs=-1, required=True)
@click.option("--out", default="history", show_default=True, help="Output folder.")
@click.option(
    "--format", "formats", default="html,pdf,json", show_default=True, help="html, pdf, json."
)
@click.option("--template-dir", type=click.Path(), default=None, help="Override templates.")
def history(bundles: tuple[str, ...], out: str, formats: str, template_dir: str | None) -> None:
    """Trend of many audits: accuracy, ECE, verdict and drift in date order.

    BUNDLES are bundle folders, quoted glob patterns or a folder of bundles. Writes
    history.json, history.html and history.pdf to --out.
    """
    from reporter.compare.history import bundle_folders
    from reporter.compare.history import history as trend
    from reporter.report.compare import write_history

    wanted = _report_formats(formats)
    h = trend(bundle_folders(list(bundles)))
    paths = write_history(h, out, formats=wanted, template_dir=template_dir)
    written = ", ".join(str(p) for p in paths.values())
    click.echo(f"Traced {len(h['rows'])} audits ({h['first']} to {h['last']}). Wrote {written}.")


def _show_audit_defaults() -> None:
    """``audit``'s options default to "not given" (so a config file can set them); show the
    value that then applies, from :class:`~reporter.config.AuditConfig`."""
    from dataclasses import MISSING, fields

    from reporter.config import AuditConfig

    defaults = {}
    for f in fields(AuditConfig):
        if f.default is not MISSING:
            defaults[f.name] = f.default
    for param in audit.params:
        if not isinstance(param, click.Option) or param.show_default not in (None, False):
            continue
        if param.name in defaults:
            value = defaults[param.name]
            if value is None:
                param.show_default = "not set"
            elif isinstance(value, tuple):
                param.show_default = ",".join(value)
            elif isinstance(value, bool):
                param.show_default = "true" if value else "false"
            else:
                param.show_default = str(value)
        elif param.name == "config_path":
            param.show_default = "none"


def _register_commands() -> None:
    from reporter.featvis.cli import featvis

    cli.add_command(featvis)
    _show_audit_defaults()
    for command in cli.commands.values():
        _add_conventions(command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="reporter")


if __name__ == "__main__":  # pragma: no cover
    main()
