"""``run_audit``: the stages in order, their timings, and the bundle at the end.

Data flow (docs/architecture.rst has the diagram)::

    AuditConfig -> prepare -> stream pass -> galleries, class averages -> features -> trust
                -> findings -> audit.json + artifacts/ -> report.html, report.pdf, MODEL_CARD.md

Each stage is a function from typed inputs to a typed result; this module only runs them,
assembles ``audit.json`` from their sections and hands the bundle to the writer, which renders
the reports from the bundle alone.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from reporter.audit.context import dataset_section, environment_section, model_section
from reporter.audit.explanations import border_summary, class_averages, galleries, method_table
from reporter.audit.features import feature_visualization
from reporter.audit.findings import key_findings, verdict_rules
from reporter.audit.results import SectionResult
from reporter.audit.stream import StreamResult, audit_indices, stream_pass
from reporter.audit.trust import shortcut_accuracy, trust_checks
from reporter.audit.verdict import verdict
from reporter.bundle import REPORT_ID_EXCLUDES, SCHEMA_VERSION, Artifacts, report_id
from reporter.compare import Bundle, bundle_from_audit, load_bundle
from reporter.compare.changes import changes_section
from reporter.config import AuditConfig
from reporter.data.transforms import preprocessing_summary, size_mismatch_hint
from reporter.distributed import Session, session
from reporter.errors import ReporterError
from reporter.metrics import classification_metrics
from reporter.models import LoadedModel, weights_sha256
from reporter.nn.device import model_device
from reporter.nn.hooks import eval_mode
from reporter.nn.layers import auto_layer_choice, trace_layers
from reporter.outdir import output_lock
from reporter.report.writer import publish_audit
from reporter.setup import Prepared, prepare

__all__ = [
    "AuditResult",
    "Timer",
    "assemble",
    "preprocessing_section",
    "run_audit",
    "signoff_section",
    "verdict_summary",
]

log = logging.getLogger(__name__)

UNHOOKABLE = (
    "Class activation maps and feature visualization need a model whose layers can be "
    "hooked; this TorchScript model only allows predictions. Audit the original nn.Module "
    "(a state_dict plus --arch) to get them."
)


@dataclass
class AuditResult:
    """What :func:`run_audit` returns.

    Attributes:
        audit: The report context, exactly as written to ``audit.json``.
        paths: Written files by format (``html``, ``pdf``, ``json``, ``modelcard``, ``config``,
            ``artifacts``).
        seconds: Wall time of the run.
        summary: One line describing what was audited.
    """

    audit: dict[str, Any]
    paths: dict[str, Path]
    seconds: float
    summary: str

    def _repr_html_(self) -> str:
        """A Jupyter view: verdict, key numbers, preprocessing and links to the files."""
        from reporter.notebook import audit_result_html

        return audit_result_html(self)


class Timer:
    """Wall time per named stage; announces each stage on stderr when ``announce``."""

    def __init__(self, announce: bool = False) -> None:
        self.seconds: dict[str, float] = {}
        self.announce = announce

    @contextmanager
    def __call__(self, stage: str, message: str | None = None) -> Iterator[None]:
        if self.announce and message:
            tqdm.write(f"reporter: {message}", file=sys.stderr)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def _metrics(stream: StreamResult, names: list[str]) -> dict[str, Any]:
    preds = stream.predictions
    metrics = classification_metrics(
        preds.probs, preds.labels, names, nonfinite_inputs=preds.nonfinite_inputs
    )
    correct = preds.preds == preds.labels
    metrics["confident_mistakes"] = int(((~correct) & (preds.confidence > 0.9)).sum())
    return metrics


def verdict_summary(audit: dict[str, Any]) -> str:
    """``verdict fail: 2 high, 1 medium findings`` for the command line's last line."""
    counts: dict[str, int] = {}
    for f in audit.get("findings") or []:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    shown = [f"{counts[s]} {s}" for s in ("high", "medium", "low") if counts.get(s)]
    level = (audit.get("verdict") or {}).get("level", "none")
    return f"verdict {level}: " + (", ".join(shown) + " findings" if shown else "no problem found")


def signoff_section(audit: dict[str, Any], signoff: dict[str, Any]) -> dict[str, Any]:
    """``audit.json``'s ``signoff``: what the report's sign-off block shows. The report id is
    computed last, over everything else (:func:`reporter.bundle.report_id`)."""
    model = audit.get("model") or {}
    section = {
        "report_id": None,
        "report_id_excludes": list(REPORT_ID_EXCLUDES),
        "tool_version": (audit.get("environment") or {}).get("reporter"),
        "data_fingerprint": (audit.get("dataset") or {}).get("fingerprint"),
        "training_data_fingerprint": model.get("training_data_fingerprint"),
        "weights_sha256": model.get("sha256"),
        "status": (audit.get("verdict") or {}).get("level"),
        "reviewer": signoff.get("reviewer") or None,
        "approver": signoff.get("approver") or None,
        "date": signoff.get("date") or None,
    }
    return section


def assemble(
    prep: Prepared,
    config: AuditConfig,
    stream: StreamResult,
    sections: dict[str, SectionResult],
    *,
    timings: dict[str, float],
    shortcut_check: dict[str, Any] | None,
    argv: list[str],
    world_size: int = 1,
    layer_choice: str | None = None,
) -> dict[str, Any]:
    """``audit.json`` from the stage results (findings included)."""
    names = list(prep.bundle.class_names)
    explanations: dict[str, Any] = {"methods": [], "layers": stream.layers}
    if stream.layers:
        explanations.update(
            methods=method_table(list(config.methods)),
            seconds_per_image=stream.seconds_per_image,
            flagged=stream.flagged,
            flagged_maps=int(sum(v for d in stream.flagged.values() for v in d.values())),
            galleries=sections["galleries"].section,
            class_average=sections["class_average"].section,
            border_summary=border_summary(config, names, stream),
            record_layer=stream.layers[0],
        )
        if layer_choice:
            explanations["layer_choice"] = layer_choice
    else:
        explanations["unavailable"] = UNHOOKABLE
    audit: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "title": f"Model audit: {prep.loaded.meta.arch} on {prep.bundle.name}",
        "model": model_section(prep),
        "dataset": dataset_section(prep, stream.predictions, shortcut_check),
        "metrics": _metrics(stream, names),
        "explanations": explanations,
        "featvis": sections["featvis"].section if "featvis" in sections else {},
        "trust": sections["trust"].section if "trust" in sections else {},
        "verdict": None,
        "findings": [],
        "skipped": list(prep.bundle.skipped) + list(stream.predictions.skipped),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "environment": environment_section(
            str(model_device(prep.loaded.model)), world_size, stream.precision, stream.decode
        ),
        "preprocessing": preprocessing_section(prep),
        "config": config.to_dict(),
        "command": shlex.join(argv) if argv else None,
        "model_card": dict(config.model_card),
    }
    training = audit["model"].get("training") or {}
    audit["metrics"]["train_accuracy"] = training.get("final_train_accuracy")
    rules = verdict_rules(config.verdict)
    audit["findings"] = key_findings(audit, rules)
    audit["verdict"] = verdict(audit, rules)
    audit["signoff"] = signoff_section(audit, config.signoff)
    audit["signoff"]["report_id"] = report_id(audit)
    return audit


def run_audit(
    config: AuditConfig,
    *,
    argv: list[str] | None = None,
    model: LoadedModel | None = None,
) -> AuditResult:
    """Run the whole audit described by ``config`` and write the bundle and its reports.

    Args:
        config: The audit configuration.
        argv: The command line that started the run (recorded in the appendix).
        model: An in-memory model (see :func:`reporter.run_audit`), used instead of
            ``config.model``; its modes are restored afterwards.

    Under torchrun (``WORLD_SIZE`` > 1) every process runs this: each audits its share of
    the images, rank 0 merges the shares, runs the stages that need every image, writes the
    bundle and returns its result; the other ranks return an :class:`AuditResult` with an
    empty ``audit`` and no ``paths`` (docs/scale.rst).

    Returns:
        An :class:`AuditResult` with the context written to ``audit.json`` and the paths.

    Raises:
        ReporterError: for bad input; nothing in ``config.out`` is changed then.
    """
    out = Path(config.out)
    # under torchrun (WORLD_SIZE > 1) every process joins the group; only rank 0 touches --out
    with session(config.device) as sess, ExitStack() as held:
        previous: Bundle | None = None
        with sess.stage("checking the output folder"):
            if sess.is_main:
                _check_output_folder(out)
                # read before any work (a bad --previous is a one-line error) and before --out
                # is replaced: --previous may be --out itself (a report refreshed in place)
                previous = load_bundle(config.previous) if config.previous else None
                # held for the whole run: a second audit into the same --out stops at once
                held.enter_context(output_lock(out))
        if model is not None:  # the caller's train/eval mode comes back afterwards
            held.enter_context(eval_mode(model.model))
        return _run(config, out, argv or [], sess, previous, model)


def _prepare(
    config: AuditConfig, sess: Session, progress: bool, module: LoadedModel | None
) -> Prepared:
    """Load (or train) the model and the data on every process.

    With several processes rank 0 goes first (it trains and caches the model when the audit
    trains); the others wait, then load the cached model. All must then hold the same model
    and the same test data.
    """

    def run(show: bool) -> Prepared:
        return prepare(
            model=config.model,
            data=config.data,
            arch=config.arch,
            train_data=config.train_data,
            test_data=config.test_data,
            split=config.split,
            seed=config.seed,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            input_size=config.input_size,
            trust_checkpoint=config.trust_checkpoint,
            device=config.device,
            spurious=config.spurious,
            shortcut=config.shortcut,
            cache_dir=config.cache_dir,
            progress=show,
            preprocessing=config.preprocessing(),
            arch_kwargs=config.arch_kwargs,
            module=module,
        )

    if not sess.distributed:
        return run(progress)
    prep: Prepared | None = None
    with sess.stage("loading the model and data (process 0 trains if the audit trains)"):
        if sess.is_main:
            prep = run(progress)
    with sess.stage("loading the model and data"):
        if not sess.is_main:
            prep = run(False)
    assert prep is not None
    _check_same_inputs(prep, sess)
    return prep


def _check_same_inputs(prep: Prepared, sess: Session) -> None:
    """Every process must audit the same model on the same test data."""
    test = prep.bundle.test
    mine = {
        "weights": weights_sha256(prep.loaded.model),
        "data": test.fingerprint(),
        "images": len(test),
        "classes": list(prep.bundle.class_names),
    }
    everyone = sess.all_gather_object(mine, what="comparing the model and data")
    for rank, theirs in enumerate(everyone):
        if theirs["weights"] != everyone[0]["weights"]:
            raise ReporterError(
                f"Process {rank} loaded other model weights than process 0; give every process "
                "the same --model file (or a --cache-dir all machines share when the audit "
                "trains, or train once with `reporter train` and pass --model)."
            )
        if theirs["data"] != everyone[0]["data"] or theirs["images"] != everyone[0]["images"]:
            raise ReporterError(
                f"Process {rank} sees other test data than process 0 ({theirs['images']} vs "
                f"{everyone[0]['images']} images); every machine needs the same --data."
            )
        if theirs["classes"] != everyone[0]["classes"]:
            raise ReporterError(f"Process {rank} has other class names than process 0.")


def _run(
    config: AuditConfig,
    out: Path,
    argv: list[str],
    sess: Session,
    previous: Bundle | None = None,
    module: LoadedModel | None = None,
) -> AuditResult:
    progress = not config.quiet and sess.is_main
    timer = Timer(announce=progress)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    with timer("setup", "loading the model and data (training if needed)"):
        prep = _prepare(config, sess, progress, module)
        _check_weights(prep, config)
    test = prep.bundle.test
    indices = audit_indices(len(test), test.labels, config.max_images, config.seed)
    shared = f" on {sess.world_size} processes" if sess.distributed else ""
    with timer("explain", f"predicting and explaining {len(indices)} images{shared}"):
        stream = stream_pass(prep, config, indices, progress=progress, session=sess)
    if stream is None:  # not rank 0: its share is merged there, and it writes nothing
        summary = (
            f"process {sess.rank} of {sess.world_size}: its share of the {len(indices)} images "
            "is merged on process 0, which writes the report"
        )
        return AuditResult({}, {}, time.perf_counter() - start, summary)
    if len(stream.predictions.labels) == 0:
        raise ReporterError(
            f"None of the {len(indices)} test images could be read; see the reasons with "
            "`reporter predict MODEL --data ... --json -`."
        )
    _warn_size_mismatch(prep, stream, config.batch_size)
    artifacts = Artifacts()
    for name, arr in stream.records().items():
        artifacts.put("records", name, arr)
    names = list(prep.bundle.class_names)
    sections: dict[str, SectionResult] = {}
    if stream.layers:
        with timer("galleries", "galleries"):
            sections["galleries"] = galleries(prep, config, stream)
            sections["class_average"] = class_averages(names, stream)
        with timer("featvis", "feature visualization"):
            sections["featvis"] = feature_visualization(prep, config, stream)
        with timer("trust", "trust checks (sanity, faithfulness, localization, shortcuts)"):
            sections["trust"] = trust_checks(prep, config, stream)
    with timer("trust", None):
        check = shortcut_accuracy(prep, config)
    for section in sections.values():
        section.store(artifacts)
    audit = assemble(
        prep,
        config,
        stream,
        sections,
        timings=timer.seconds,
        shortcut_check=check,
        argv=argv,
        world_size=sess.world_size,
        layer_choice=_layer_choice(prep, config, stream),
    )
    if previous is not None:
        with timer("compare", f"comparing with the previous audit in {previous.path}"):
            current = bundle_from_audit(audit, artifacts.group("records"))
            audit["changes"] = changes_section(previous, current, seed=config.seed)
            audit["signoff"]["report_id"] = report_id(audit)  # the id covers the changes too
    with timer("render", f"writing {', '.join(config.formats)} to {out}"):
        paths = publish_audit(
            audit,
            artifacts,
            out,
            formats=config.formats,
            template_dir=config.template_dir,
            config_toml=_effective(config, audit, prep).to_toml(relative_to=out),
        )
    summary = (
        f"{prep.loaded.meta.arch} on {len(stream.predictions.labels)} images of "
        f"{prep.bundle.name} (accuracy {audit['metrics']['accuracy']:.1%}; preprocessing "
        f"{audit['preprocessing']['summary']}; {verdict_summary(audit)})"
    )
    return AuditResult(audit, paths, time.perf_counter() - start, summary)


def preprocessing_section(prep: Prepared) -> dict[str, Any]:
    """``audit.json``'s ``preprocessing``: what the model was given, and what was assumed."""
    section = prep.preprocess.describe()
    section["assumed"] = list(prep.loaded.assumed)
    section["summary"] = preprocessing_summary(section)
    return section


def _check_weights(prep: Prepared, config: AuditConfig) -> None:
    """Refuse weights other than those ``config.weights_sha256`` (audit.toml) records."""
    if config.weights_sha256 is None:
        return
    found = weights_sha256(prep.loaded.model)
    if found != config.weights_sha256:
        raise ReporterError(
            f"The model's weights (SHA-256 {found[:12]}...) are not the ones this configuration "
            f"records (weights_sha256 = {config.weights_sha256[:12]}...). Audit the recorded "
            "model, or remove weights_sha256 from the configuration to audit these weights."
        )


def _warn_size_mismatch(prep: Prepared, stream: StreamResult, batch_size: int) -> None:
    """Warn (log and model notes) when the first batches are at chance level and the data's
    size differs from the model's input size."""
    preds = stream.predictions
    order = np.argsort(preds.indices, kind="stable")[: 2 * batch_size]
    hint = size_mismatch_hint(
        int((preds.preds[order] == preds.labels[order]).sum()),
        len(order),
        len(prep.bundle.class_names),
        prep.bundle.input_size,
        prep.loaded.meta.input_size,
        stated="input_size" not in prep.loaded.assumed,
    )
    if hint:
        log.warning(hint)
        prep.notes.append(hint[0].upper() + hint[1:])


def _layer_choice(prep: Prepared, config: AuditConfig, stream: StreamResult) -> str | None:
    """Why ``auto`` chose its layer (``None`` when the layers were named)."""
    if "auto" not in config.layers or not stream.layers:
        return None
    meta = prep.loaded.meta
    model = prep.loaded.model
    sample = torch.zeros(1, meta.channels, *meta.input_size, device=model_device(model))
    return auto_layer_choice(trace_layers(model, sample))[1]


def _effective(config: AuditConfig, audit: dict[str, Any], prep: Prepared) -> AuditConfig:
    """The configuration to write as audit.toml: the stated and found preprocessing and the
    weights hash, so that running it again audits the same thing the same way."""
    pre = audit["preprocessing"]
    side = pre["input_size"]
    changes: dict[str, Any] = {
        "resize": pre["resize"],
        "crop": pre["crop"],
        "channel_order": pre["channel_order"],
        "grayscale": pre["grayscale"],
        "mean": tuple(pre["mean"]),
        "std": tuple(pre["std"]),
        "weights_sha256": audit["model"]["sha256"],
    }
    if side[0] == side[1]:
        changes["input_size"] = side[0]
    if prep.trained is not None or prep.cached_checkpoint == prep.loaded.source:
        # trained by reporter: the training states the preprocessing, and the weights hash
        # depends on the machine
        return config
    return config.replace(**changes)


def _check_output_folder(out: Path) -> None:
    """Refuse an output folder that cannot be written before any work is done."""
    if out.exists() and not out.is_dir():
        raise ReporterError(f"--out {out} is a file; give a folder for the report.")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ReporterError(
            f"Cannot write the report to {out}: {parent} is a file, not a folder. "
            "Choose another --out."
        )
    if not os.access(parent, os.W_OK):
        raise ReporterError(f"Cannot write to {parent}: permission denied. Choose another --out.")
