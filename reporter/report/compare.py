"""Render a comparison (``compare.json``) and a trend page (``history.json``) as HTML and PDF.

The numbers and sentences come from :mod:`reporter.compare`; this module draws the figures
(from the JSON numbers and the most-moved maps stored beside it), renders the templates
``compare.html`` / ``history.html`` with the audit's theme in the same (sandboxed, for
``--template-dir``) Jinja2 environment, and writes the folder atomically
(:func:`reporter.outdir.staged_output`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from reporter.bundle import TRUST_CHECKS, to_json
from reporter.errors import ReporterError
from reporter.outdir import staged_output
from reporter.report import figures as fg
from reporter.report.render import render_pdf, template_environment, template_errors

__all__ = [
    "COMPARE_FILES",
    "HISTORY_FILES",
    "compare_figures",
    "history_figures",
    "render_page",
    "write_comparison",
    "write_history",
]

COMPARE_FILES = frozenset({"compare.json", "report.html", "report.pdf", "artifacts"})
"""Names a comparison folder owns (anything else in ``--out`` is the user's and is kept)."""
HISTORY_FILES = frozenset({"history.json", "history.html", "history.pdf"})
"""Names a trend folder owns."""


def render_page(template: str, template_dir: str | Path | None, **context: Any) -> str:
    """Render ``template`` with the theme's CSS (sandboxed when ``template_dir`` is given)."""
    env = template_environment(template_dir)
    with template_errors(template_dir):
        css = env.get_template("report.css").render()
        return env.get_template(template).render(css=css, **context)


def _map_tile(arr: np.ndarray, cmap: str) -> str:
    sal = np.nan_to_num(np.clip(np.asarray(arr, np.float32), 0, 1))
    rgb = (matplotlib.colormaps[cmap](sal)[..., :3] * 255 + 0.5).astype(np.uint8)
    return fg.tile_uri(rgb, min_side=96)


def _drift_figure(per_class: dict[str, dict[str, Any]]) -> str | None:
    stats = [
        {"label": name if len(name) <= 14 else name[:13] + "\u2026", "med": q["median"],
         "q1": q["q1"], "q3": q["q3"], "whislo": q["min"], "whishi": q["max"], "fliers": []}
        for name, q in per_class.items() if q["median"] is not None
    ]  # fmt: skip
    if not stats:
        return None
    fig = Figure(figsize=(max(3.2, 0.7 * len(stats) + 1.2), 2.6))
    ax = fig.add_subplot()
    ax.bxp(stats, showfliers=False, patch_artist=True,
           boxprops={"facecolor": "#dbe7f3", "edgecolor": fg.ACCENT},
           medianprops={"color": fg.WARN, "lw": 1.6})  # fmt: skip
    ax.axhline(1.0, ls="--", lw=0.7, color="#9aa5b1")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("rank correlation, old vs new map", fontsize=7.5)
    for label in ax.get_xticklabels():
        label.set_fontsize(7)
    fg._style(ax)
    return fg.figure_uri(fig)


def compare_figures(c: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The comparison's figures: the drift per class and the most-moved maps."""
    cmap = "viridis"
    figs: dict[str, Any] = {"drift": None, "moved": [], "colorbar": fg.colorbar_uri(cmap)}
    d = c["drift"]
    if d.get("method"):
        figs["drift"] = _drift_figure(d["methods"][d["method"]]["per_class"])
    old, new = arrays.get("old_maps"), arrays.get("new_maps")
    if old is not None and new is not None:
        figs["moved"] = [
            {"old": _map_tile(old[i], cmap), "new": _map_tile(new[i], cmap)}
            for i in range(min(len(old), len(new), len(d.get("most_moved") or [])))
        ]
    return figs


def write_comparison(
    c: dict[str, Any],
    arrays: dict[str, np.ndarray],
    out: str | Path,
    *,
    formats: Iterable[str] = ("html", "pdf"),
    template_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Write ``compare.json``, ``artifacts/moved.npz`` and the reports into ``out`` atomically.

    Raises:
        ReporterError: ``out`` holds an audit bundle (its reports and ``artifacts/`` would be
            replaced).
    """
    out = Path(out)
    if (out / "audit.json").exists():
        raise ReporterError(
            f"--out {out} holds an audit bundle; writing the comparison there would replace its "
            "report and artifacts. Choose another folder (e.g. a sub-folder, compare/)."
        )
    formats = set(formats)
    with staged_output(out, owned=COMPARE_FILES) as stage:
        paths = {"json": stage / "compare.json"}
        paths["json"].write_text(to_json(c), encoding="utf-8")
        if arrays:
            (stage / "artifacts").mkdir()
            with (stage / "artifacts" / "moved.npz").open("wb") as fh:
                np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        if formats & {"html", "pdf"}:
            html = render_page(
                "compare.html",
                template_dir,
                c=c,
                fig=compare_figures(c, arrays),
                checks=TRUST_CHECKS,
            )
            if "html" in formats:
                paths["html"] = stage / "report.html"
                paths["html"].write_text(html, encoding="utf-8")
            if "pdf" in formats:
                paths["pdf"] = render_pdf(html, stage / "report.pdf", stage)
        return {k: out / p.relative_to(stage) for k, p in paths.items()}


def history_figures(h: dict[str, Any]) -> dict[str, Any]:
    """The trend page's chart: accuracy and ECE (left axis), drift (right), in date order."""
    rows = h["rows"]
    if not rows:
        return {"trend": None}
    x = np.arange(len(rows))
    fig = Figure(figsize=(6.6, 2.8))
    ax = fig.add_subplot()

    def series(key: str) -> np.ndarray:
        return np.asarray([np.nan if r[key] is None else r[key] for r in rows], np.float64)

    ax.plot(x, series("accuracy"), marker="o", lw=1.6, color=fg.ACCENT, label="accuracy")
    ax.plot(x, series("ece"), marker="s", lw=1.2, color="#b7791f", label="ECE")
    ax.plot(x, series("drift"), marker="^", lw=1.2, ls="--", color=fg.WARN,
            label="drift vs previous")  # fmt: skip
    colours = {"pass": "#2f7d4f", "review": "#b7791f", "fail": fg.WARN}
    for i, r in enumerate(rows):
        ax.scatter([i], [-0.08], marker="s", s=40, color=colours.get(r["verdict"], "#9aa5b1"),
                   clip_on=False)  # fmt: skip
    ax.set_ylim(-0.12, 1.02)
    dates = [r["date"] for r in rows]
    if len(set(dates)) < len(dates):  # several audits a day: show the time too
        dates = [r["generated"][5:16].replace("T", " ") for r in rows]
    ax.set_xticks(x, dates, rotation=30 if len(rows) > 5 else 0,
                  ha="right" if len(rows) > 5 else "center")  # fmt: skip
    ax.legend(fontsize=6.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_ylabel("fraction", fontsize=8)
    fg._style(ax)
    return {"trend": fg.figure_uri(fig)}


def write_history(
    h: dict[str, Any],
    out: str | Path,
    *,
    formats: Iterable[str] = ("html", "pdf"),
    template_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Write ``history.json`` and the trend page into ``out`` atomically."""
    out = Path(out)
    formats = set(formats)
    with staged_output(out, owned=HISTORY_FILES) as stage:
        paths = {"json": stage / "history.json"}
        paths["json"].write_text(to_json(h), encoding="utf-8")
        if formats & {"html", "pdf"}:
            html = render_page("history.html", template_dir, h=h, fig=history_figures(h))
            if "html" in formats:
                paths["html"] = stage / "history.html"
                paths["html"].write_text(html, encoding="utf-8")
            if "pdf" in formats:
                paths["pdf"] = render_pdf(html, stage / "history.pdf", stage)
        return {k: out / p.relative_to(stage) for k, p in paths.items()}
