"""Write the report files atomically: build everything in a temporary folder, then move.

An interrupted or failed run never leaves a half-written report over a previous good one:
files are produced in a hidden temporary folder next to ``--out`` and moved into place with
``os.replace`` only once every requested file exists. The temporary folder is always removed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from reporter.config import AuditConfig
from reporter.errors import ReporterError
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
    """Write the requested formats into ``out`` atomically; return the final paths."""
    out = Path(out)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as exc:
        raise ReporterError(f"Cannot write the report to {out}: {exc.strerror or exc}.") from exc
    try:
        written: dict[str, str] = {}
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
        try:
            out.mkdir(parents=True, exist_ok=True)
            # check every destination first, so that a move cannot fail half-way through
            for name in written.values():
                target = out / name
                if target.is_dir() or (target.exists() and not os.access(target, os.W_OK)):
                    raise ReporterError(
                        f"Cannot replace {target}: it is a folder or not writable. Move it "
                        "away or choose another --out; the previous report was left as it was."
                    )
            for name in written.values():
                os.replace(tmp / name, out / name)
        except OSError as exc:
            raise ReporterError(
                f"Cannot write the report to {out}: {exc.strerror or exc}."
            ) from exc
        return {fmt: out / name for fmt, name in written.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
