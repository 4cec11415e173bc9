"""Write a bundle and its reports, and render the reports of an existing bundle again.

Both paths go through the same steps, so a report rendered at the end of an audit and one
rendered later by ``reporter render`` are the same file: the bundle (``audit.json`` and
``artifacts/``) is written to a staging folder first, the reports are rendered from what was
written there, and the staging folder replaces ``--out`` as a whole
(:func:`reporter.outdir.staged_output`), so a failed or interrupted run leaves the earlier
report as it was.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reporter.bundle import ARTIFACTS_DIR, AUDIT_FILE, Artifacts, read_bundle, to_json, write_bundle
from reporter.errors import ReporterError
from reporter.outdir import staged_output
from reporter.report.modelcard import model_card_markdown
from reporter.report.render import pdf_variants, render_html, render_pdf
from reporter.report.views import report_figures

__all__ = ["FILE_NAMES", "REPORT_FORMATS", "publish_audit", "render_bundle", "render_reports"]

FILE_NAMES = {
    "json": AUDIT_FILE,
    "html": "report.html",
    "pdf": "report.pdf",
    "modelcard": "MODEL_CARD.md",
    "config": "audit.toml",
}
REPORT_FORMATS = ("html", "pdf", "modelcard")
"""Formats rendered from a bundle (``json`` is the bundle itself and always written)."""


def render_reports(
    folder: Path,
    formats: Iterable[str],
    template_dir: str | Path | None = None,
    pdf_variant: str | None = None,
) -> dict[str, Path]:
    """Render the requested report formats of the bundle in ``folder`` into ``folder``.

    The PDF variant is ``pdf_variant``, else the audit's ``config.pdf_variant`` (so
    ``reporter render`` writes the same kind of PDF the audit did), else a plain tagged PDF.
    """
    audit, artifacts = read_bundle(folder)
    variant = pdf_variant or (audit.get("config") or {}).get("pdf_variant")
    formats = set(formats)
    written: dict[str, Path] = {}
    if formats & {"html", "pdf"}:
        html = render_html(audit, report_figures(audit, artifacts), template_dir)
        if "html" in formats:
            written["html"] = folder / FILE_NAMES["html"]
            written["html"].write_text(html, encoding="utf-8")
        if "pdf" in formats:
            written["pdf"] = render_pdf(html, folder / FILE_NAMES["pdf"], folder, variant)
    if "modelcard" in formats:
        written["modelcard"] = folder / FILE_NAMES["modelcard"]
        written["modelcard"].write_text(model_card_markdown(audit), encoding="utf-8")
    return written


def _final(paths: dict[str, Path], stage: Path, out: Path) -> dict[str, Path]:
    return {fmt: out / p.relative_to(stage) for fmt, p in paths.items()}


def publish_audit(
    audit: dict[str, Any],
    artifacts: Artifacts,
    out: Path,
    *,
    formats: Iterable[str],
    template_dir: str | Path | None = None,
    config_toml: str | None = None,
) -> dict[str, Path]:
    """Write the bundle of a finished audit and its reports into ``out`` (atomically).

    ``audit["rendering"]`` records how long rendering took; it is written after the reports
    (no template shows it), so rendering the bundle again gives the same report.
    """
    out = Path(out)
    with staged_output(out) as stage:
        paths = write_bundle(stage, audit, artifacts)
        if config_toml is not None:
            paths["config"] = stage / FILE_NAMES["config"]
            paths["config"].write_text(config_toml, encoding="utf-8")
        start = time.perf_counter()
        paths.update(
            render_reports(stage, [f for f in formats if f in REPORT_FORMATS], template_dir)
        )
        audit["rendering"] = {"seconds": round(time.perf_counter() - start, 3)}
        (stage / AUDIT_FILE).write_text(to_json(audit), encoding="utf-8")
        return _final(paths, stage, out)


def render_bundle(
    source: str | Path,
    *,
    out: str | Path | None = None,
    formats: Iterable[str] = REPORT_FORMATS,
    template_dir: str | Path | None = None,
    pdf_variant: str | None = None,
) -> dict[str, Path]:
    """Render the reports of the bundle in ``source`` again, into ``out`` (default: ``source``).

    The bundle files (``audit.json``, ``artifacts/``, ``audit.toml``) are copied unchanged;
    report files of other formats already in ``source`` are kept when rendering in place.
    Needs neither the model nor the data.
    """
    source = Path(source)
    read_bundle(source)  # a clear message for a folder that is not a (current) bundle
    if pdf_variant is not None and pdf_variant not in pdf_variants():
        raise ReporterError(
            f"Unknown PDF variant {pdf_variant!r}. This WeasyPrint writes: "
            f"{', '.join(pdf_variants())}."
        )
    target = Path(out) if out is not None else source
    formats = [f for f in formats if f in REPORT_FORMATS]
    in_place = target.resolve() == source.resolve()
    keep = [FILE_NAMES["json"], FILE_NAMES["config"], ARTIFACTS_DIR]
    if in_place:
        keep += [FILE_NAMES[f] for f in REPORT_FORMATS if f not in formats]
    with staged_output(target) as stage:
        for name in keep:
            src = source / name
            try:
                if src.is_dir():
                    shutil.copytree(src, stage / name)
                elif src.is_file():
                    shutil.copy2(src, stage / name)
            except OSError as exc:
                raise ReporterError(f"Cannot copy {src}: {exc.strerror or exc}.") from exc
        paths = render_reports(stage, formats, template_dir, pdf_variant)
        return _final(paths, stage, target)
