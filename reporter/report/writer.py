"""Write the report files as one bundle (see :mod:`reporter.outdir` for the atomic swap).

An interrupted or failed run never leaves a half-written report over a previous good one, and
never a folder holding files of two runs: the files are produced in a staging folder next to
``--out``, which replaces ``--out`` in one step only once every requested file exists.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from reporter.config import AuditConfig
from reporter.outdir import staged_output
from reporter.report.build import Report
from reporter.report.modelcard import model_card_markdown
from reporter.report.render import render_html, render_pdf

__all__ = ["to_json", "write_outputs"]

log = logging.getLogger(__name__)

FILE_NAMES = {
    "json": "audit.json",
    "html": "report.html",
    "pdf": "report.pdf",
    "modelcard": "MODEL_CARD.md",
    "config": "audit.toml",
}


def _clean(value: Any) -> Any:
    """Make a value strict-JSON safe (NaN and infinities become ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value


def to_json(audit: dict[str, Any]) -> str:
    """``audit.json`` text: strict JSON, sorted keys inside sections, UTF-8."""
    return json.dumps(_clean(audit), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_outputs(report: Report, config: AuditConfig, out: Path) -> dict[str, Path]:
    """Write the requested formats as one bundle replacing ``out`` atomically; return the paths.

    The files are written into a staging folder and swapped in as a whole by
    :func:`reporter.outdir.staged_output`: a failure, a full disk or a signal leaves the
    previous report in ``out`` exactly as it was, and a run never mixes files with another.
    """
    out = Path(out)
    written: dict[str, str] = {}
    with staged_output(out) as tmp:
        formats = set(config.formats)
        start = time.perf_counter()
        if formats & {"html", "pdf"}:
            html = render_html(_clean(report.audit), report.figures, config.template_dir)
            if "html" in formats:
                (tmp / FILE_NAMES["html"]).write_text(html, encoding="utf-8")
                written["html"] = FILE_NAMES["html"]
            if "pdf" in formats:
                render_pdf(html, tmp / FILE_NAMES["pdf"], tmp)
                written["pdf"] = FILE_NAMES["pdf"]
        if "modelcard" in formats:
            (tmp / FILE_NAMES["modelcard"]).write_text(
                model_card_markdown(_clean(report.audit)), encoding="utf-8"
            )
            written["modelcard"] = FILE_NAMES["modelcard"]
        if "json" in formats:
            # written last, so that it records how long the HTML and PDF took
            report.audit["timings"]["render"] = round(time.perf_counter() - start, 3)
            (tmp / FILE_NAMES["json"]).write_text(to_json(report.audit), encoding="utf-8")
            written["json"] = FILE_NAMES["json"]
        (tmp / FILE_NAMES["config"]).write_text(config.to_toml(), encoding="utf-8")
        written["config"] = FILE_NAMES["config"]
    return {fmt: out / name for fmt, name in written.items()}
