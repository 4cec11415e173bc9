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


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_uri(fig: Figure, dpi: int = 150) -> str:
    """Render a matplotlib figure to a PNG data URI."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # class names in scripts DejaVu Sans lacks (CJK ...) are drawn as boxes in the chart;
        # the tables of the report show them correctly, so the chart need not warn
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return data_uri(buf.getvalue())


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
    ax.tick_params(labelsize=7, colors=INK)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)


def confusion_figure(cm: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    """Row-normalised confusion matrix with counts, as a PNG data URI."""
    m = np.asarray(cm, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(names)
    side = min(7.0, 1.6 + 0.42 * n)
    fig = Figure(figsize=(side, side * 0.9))
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    labels = [s if len(s) <= 14 else s[:13] + "…" for s in names]
    # class names are data: never parse them as mathtext ("$_$" would raise)
    ax.set_xticks(
        range(n),
        labels,
        rotation=45 if n > 4 else 0,
        ha="right" if n > 4 else "center",
        parse_math=False,
    )
    ax.set_yticks(range(n), labels, parse_math=False)
    ax.set_xlabel("predicted class", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(m[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white" if frac[i, j] > 0.5 else INK,
                    )
    _style(ax)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.ax.tick_params(labelsize=7)
    cb.set_label("fraction of the true class", fontsize=7)
    return figure_uri(fig)


def reliability_figure(bins: Sequence[dict], ece: float | None) -> str:
    """Reliability diagram: accuracy vs confidence per bin, with the diagonal and ECE."""
    fig = Figure(figsize=(3.6, 3.3))
    ax = fig.add_subplot()
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
    ax.set_xlabel("confidence", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.set_title("ECE = n/a" if ece is None else f"ECE = {ece:.3f}", fontsize=9, color=INK)
    ax.legend(fontsize=6.5, frameon=False, loc="upper left")
    _style(ax)
    return figure_uri(fig)


def confidence_histogram(conf_correct: np.ndarray, conf_wrong: np.ndarray) -> str:
    """Histogram of top-1 confidence for correct vs wrong predictions."""
    fig = Figure(figsize=(3.6, 3.3))
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
    ax.legend(fontsize=6.5, frameon=False, loc="upper left")
    _style(ax)
    return figure_uri(fig)


def curves_figure(
    curves: dict[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str
) -> str:
    """Line plot of named curves over a [0, 1] x axis (deletion / insertion curves)."""
    fig = Figure(figsize=(3.6, 2.8))
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
    ax.set_title(title, fontsize=9, color=INK)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6.5, frameon=False)
    _style(ax)
    return figure_uri(fig)
