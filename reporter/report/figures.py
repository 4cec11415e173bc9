"""Figures for the report: matplotlib charts and fast numpy/Pillow image tiles, as PNG data URIs.

Charts use matplotlib's object-oriented API (no pyplot state). Heatmap overlays are composed with
numpy and a matplotlib colormap, which is much faster than one figure per image.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence

import matplotlib
import matplotlib.text
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from reporter.display import overlay, to_uint8_image

__all__ = [
    "colorbar_uri",
    "confidence_histogram",
    "confusion_figure",
    "curves_figure",
    "data_uri",
    "figure_uri",
    "overlay",
    "reliability_figure",
    "tile_uri",
    "to_uint8_image",
]

INK = "#1f2933"
ACCENT = "#1f5f99"
WARN = "#c2410c"
MIN_TILE = 112

#: The width (inches) a chart is drawn at: the PDF prints it at exactly this width (82 mm,
#: ``figure.chart img`` in report.css), so font sizes below are the printed sizes.
CHART_WIDTH_IN = 82 / 25.4
#: The width of a chart that spans the page (``figure.chart.wide``, 180 mm).
WIDE_CHART_WIDTH_IN = 180 / 25.4
#: The smallest font (points) any chart uses: at the printed width it stays >= 6 pt.
MIN_FONT_PT = 7.0
#: The PNG text chunk that records a chart's smallest font, so tests can check the printed size.
MIN_FONT_KEY = "reporter-min-font-pt"
CHART_DPI = 150


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def smallest_font(fig: Figure) -> float:
    """The smallest font size (points) of the visible, non-empty text of a figure."""
    sizes = [
        float(t.get_fontsize())
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip()
    ]
    return min(sizes) if sizes else MIN_FONT_PT


def figure_uri(fig: Figure, dpi: int = CHART_DPI) -> str:
    """Render a matplotlib figure to a PNG data URI at exactly its ``figsize``.

    No tight bounding box: the image keeps the figure's size (the layout engine fits the
    labels inside), so a chart printed at its design width shows its fonts at their sizes.
    The smallest font is recorded in the PNG (``MIN_FONT_KEY``) and the DPI in its header.
    """
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # class names in scripts DejaVu Sans lacks (CJK ...) are drawn as boxes in the chart;
        # the tables of the report show them correctly, so the chart need not warn
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.canvas.draw()  # lay out first: the smallest font is read from the drawn texts
        fig.savefig(
            buf,
            format="png",
            dpi=dpi,
            metadata={"Software": None, MIN_FONT_KEY: f"{smallest_font(fig):g}"},
        )
    return data_uri(buf.getvalue())


def _chart(height_in: float, width_in: float = CHART_WIDTH_IN, **kwargs) -> Figure:
    """A figure at the printed chart width whose layout engine keeps every label inside."""
    return Figure(figsize=(width_in, height_in), layout="constrained", **kwargs)


def _upscale(arr: np.ndarray, min_side: int = MIN_TILE) -> np.ndarray:
    h, w = arr.shape[:2]
    factor = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    if factor == 1:
        return arr
    return np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)


def tile_uri(arr: np.ndarray, min_side: int = MIN_TILE) -> str:
    """PNG data URI of an ``[H, W, 3]`` uint8 tile, upscaled (nearest) to ``min_side``."""
    buf = io.BytesIO()
    Image.fromarray(_upscale(arr, min_side)).save(buf, format="PNG", optimize=False)
    return data_uri(buf.getvalue())


def colorbar_uri(cmap: str, label: str = "saliency") -> str:
    """A horizontal colour bar from low to high saliency."""
    fig = Figure(figsize=(3.2, 0.42))
    ax = fig.add_axes((0.05, 0.5, 0.9, 0.35))
    ax.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap=cmap, extent=(0, 1, 0, 1))
    ax.set_yticks([])
    ax.set_xticks([0, 0.5, 1], ["low", label, "high"], fontsize=7, color=INK)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return figure_uri(fig)


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=MIN_FONT_PT, colors=INK)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)


def _legend_below(ax, ncol: int = 2) -> None:
    """A legend under the axes, outside the plotted area: it never covers data."""
    ax.legend(
        fontsize=MIN_FONT_PT,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
        ncol=ncol,
        handlelength=1.6,
        columnspacing=1.2,
    )


#: Classes up to which the confusion matrix fits the half-page chart width with 7 pt labels.
CONFUSION_HALF_WIDTH_CLASSES = 12


def confusion_is_wide(n_classes: int) -> bool:
    """Whether the confusion matrix of ``n_classes`` classes is drawn at the full page width."""
    return n_classes > CONFUSION_HALF_WIDTH_CLASSES


def confusion_figure(cm: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    """Row-normalised confusion matrix with counts, as a PNG data URI.

    Drawn at the half-page chart width up to ``CONFUSION_HALF_WIDTH_CLASSES`` classes, at the
    full page width above; counts are written in the cells while they fit at ``MIN_FONT_PT``.
    """
    m = np.asarray(cm, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(names)
    width = WIDE_CHART_WIDTH_IN if confusion_is_wide(n) else CHART_WIDTH_IN
    fig = _chart(width * (0.92 if n <= CONFUSION_HALF_WIDTH_CLASSES else 0.8), width)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    labels = [s if len(s) <= 14 else s[:13] + "…" for s in names]
    # class names are data: never parse them as mathtext ("$_$" would raise)
    ax.set_xticks(
        range(n),
        labels,
        rotation=45 if n > 4 else 0,
        ha="right" if n > 4 else "center",
        rotation_mode="anchor",
        parse_math=False,
    )
    ax.set_yticks(range(n), labels, parse_math=False)
    ax.set_xlabel("predicted class", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    _style(ax)
    # a cell is about (0.62 * width / n) inches wide; a count needs ~0.6 em per digit
    cell_pt = 0.62 * width * 72 / max(n, 1)
    digits = len(str(int(m.max()))) if m.size else 1
    if cell_pt >= 0.62 * MIN_FONT_PT * digits + 2:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(m[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=MIN_FONT_PT,
                        color="white" if frac[i, j] > 0.5 else INK,
                    )
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.ax.tick_params(labelsize=MIN_FONT_PT)
    cb.set_label("fraction of the true class", fontsize=MIN_FONT_PT)
    return figure_uri(fig)


def reliability_figure(bins: Sequence[dict], ece: float | None) -> str:
    """Reliability diagram: accuracy vs confidence per bin, with the diagonal and ECE, over a
    panel of the number of images in each bin (a bar over few images says little)."""
    fig = _chart(3.5)
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.15))
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="#9aa5b1", label="perfect calibration")
    centers, accs, counts = [], [], []
    for b in bins:
        if b["count"]:
            centers.append((b["lo"] + b["hi"]) / 2)
            accs.append(b["accuracy"])
            counts.append(b["count"])
    width = bins[0]["hi"] - bins[0]["lo"] if bins else 0.1
    ax.bar(centers, accs, width=width * 0.92, color=ACCENT, alpha=0.85, label="accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.set_title(
        "ECE = n/a" if ece is None else f"ECE = {ece:.3f}", fontsize=9, color=INK, loc="left"
    )
    # above the axes, beside the title: a legend inside would cover the bars of some model
    ax.legend(fontsize=MIN_FONT_PT, frameon=False, loc="lower right", bbox_to_anchor=(1, 1))
    _style(ax)
    ax_n.bar(centers, counts, width=width * 0.92, color="#9aa5b1")
    top = max(counts) if counts else 1
    ax_n.set_ylim(0, top * 1.35)
    for x, c in zip(centers, counts, strict=True):
        ax_n.text(
            x,
            c + top * 0.04,
            str(c),
            ha="center",
            va="bottom",
            fontsize=MIN_FONT_PT,
            rotation=90 if len(bins) > 10 else 0,
            color=INK,
        )
    ax_n.set_ylabel("images", fontsize=8)
    ax_n.set_xlabel("confidence", fontsize=8)
    ax_n.set_yticks([])
    _style(ax_n)
    return figure_uri(fig)


def confidence_histogram(conf_correct: np.ndarray, conf_wrong: np.ndarray) -> str:
    """Histogram of top-1 confidence for correct vs wrong predictions."""
    fig = _chart(3.0)
    ax = fig.add_subplot()
    edges = np.linspace(0, 1, 21)
    ax.hist(
        conf_correct,
        bins=edges,  # type: ignore[arg-type]  # stubs: Sequence[float]; hist takes an array
        color=ACCENT,
        alpha=0.75,
        label=f"correct ({len(conf_correct)})",
    )
    if len(conf_wrong):
        ax.hist(
            conf_wrong,
            bins=edges,  # type: ignore[arg-type]  # stubs: Sequence[float]; hist takes an array
            histtype="step",
            linewidth=1.8,
            color=WARN,
            label=f"wrong ({len(conf_wrong)})",
        )
    ax.set_yscale("log" if len(conf_correct) > 50 else "linear")
    ax.set_xlabel("confidence of the prediction", fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    _style(ax)
    _legend_below(ax)
    return figure_uri(fig)


def curves_figure(
    curves: dict[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str
) -> str:
    """Line plot of named curves over a [0, 1] x axis (deletion / insertion curves)."""
    fig = _chart(2.9)
    ax = fig.add_subplot()
    for i, (name, curve) in enumerate(curves.items()):
        ys = np.asarray(curve, dtype=np.float64)
        ax.plot(
            np.linspace(0, 1, len(ys)),
            ys,
            lw=1.4,
            label=name,
            color=matplotlib.colormaps["tab10"](i % 10),
        )
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=8, color=INK)
    ax.set_ylim(0, 1.02)
    _style(ax)
    _legend_below(ax, ncol=min(3, max(1, len(curves))))
    return figure_uri(fig)
