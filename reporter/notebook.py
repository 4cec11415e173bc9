"""Jupyter views: ``_repr_html_`` of the audit result, a :class:`CamResult` and a featvis
:class:`RenderResult`.

Small, self-contained HTML (images as PNG data URIs, a table of numbers), built from the
objects' own fields; nothing here computes a metric.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from PIL import Image

from reporter.display import overlay, to_uint8_image

__all__ = ["audit_result_html", "cam_result_html", "png_uri", "render_result_html"]

_TILE = 96
_MAX_IMAGES = 8


def png_uri(pixels: np.ndarray, side: int = _TILE) -> str:
    """An ``[H, W, 3]`` uint8 image as a PNG data URI, scaled (nearest) to about ``side``."""
    img = Image.fromarray(to_uint8_image(pixels))
    scale = max(1, side // max(1, min(img.size)))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, title: str = "") -> str:
    style = "margin:1px;image-rendering:pixelated"
    return f'<img src="{uri}" title="{html.escape(title)}" style="{style}">'


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{html.escape(str(k))}</th>'
        f'<td style="text-align:left">{html.escape(str(v))}</td></tr>'
        for k, v in rows
    )
    return f"<table>{cells}</table>"


def cam_result_html(
    result: Any, images: Any = None, cmap: str = "viridis", max_images: int = _MAX_IMAGES
) -> str:
    """Maps of every method (rows) for the first images (columns), with their predictions.

    Args:
        result: A :class:`~reporter.explain.CamResult`.
        images: Optional ``[B, C, H, W]`` images in [0, 1] to draw under the maps (the
            :func:`~reporter.display.overlay` helper); without them the maps are shown alone.
        cmap: Colormap of the maps.
        max_images: At most this many images.
    """
    n = min(int(result.logits.shape[0]), max_images)
    layer = result.layers[0] if result.layers else None
    probs = result.logits[:n].float().softmax(1)
    head = "".join(
        f"<th>#{i}: class {int(result.predictions[i])} ({float(probs[i].max()):.0%}), "
        f"target {int(result.targets[i])}</th>"
        for i in range(n)
    )
    rows = []
    for method in result.methods:
        if layer is None:
            break
        maps = result.upsampled(method, layer)[:n].numpy()
        cells = []
        for i in range(n):
            if images is not None:
                pixels = overlay(np.asarray(images[i], dtype=np.float32), maps[i], cmap=cmap)
            else:
                pixels = (matplotlib.colormaps[cmap](maps[i])[..., :3] * 255 + 0.5).astype(np.uint8)
            cells.append(f"<td>{_img(png_uri(pixels), f'{method} #{i}')}</td>")
        rows.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    layers = ", ".join(result.layers)
    return (
        f"<div><b>CamResult</b>: {int(result.logits.shape[0])} images, methods "
        f"{html.escape(', '.join(result.methods))}, layer(s) {html.escape(layers)}"
        f" (maps of {html.escape(str(layer))}, normalised per image)"
        f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table></div>"
    )


def render_result_html(result: Any) -> str:
    """The feature-visualization images with their objectives and values."""
    cells = []
    for i, name in enumerate(result.objectives):
        pixels = to_uint8_image(result.images[i].detach().cpu().numpy())
        value = f"{float(result.initial[i]):.3g} -> {float(result.final[i]):.3g}"
        cells.append(
            f'<td style="text-align:center">{_img(png_uri(pixels, 128), name)}<br>'
            f"<code>{html.escape(name)}</code><br>{html.escape(value)}</td>"
        )
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    return (
        f"<div><b>RenderResult</b>: {len(result.objectives)} images "
        f"({html.escape(settings)})<table><tr>{''.join(cells)}</tr></table></div>"
    )


def audit_result_html(result: Any) -> str:
    """The verdict, the key numbers, the preprocessing and links to the written files."""
    audit = result.audit
    verdict = audit.get("verdict") or {}
    metrics = audit.get("metrics") or {}
    model = audit.get("model") or {}
    dataset = audit.get("dataset") or {}
    rows: list[tuple[str, Any]] = [
        ("Verdict", str(verdict.get("level", "-")).upper()),
        ("Model", f"{model.get('arch')} ({model.get('source')})"),
        ("Data", f"{dataset.get('name')}: {dataset.get('audited_images')} images"),
    ]
    if "accuracy" in metrics:
        rows.append(("Accuracy", f"{metrics['accuracy']:.1%}"))
    if "macro_f1" in metrics:
        rows.append(("Macro F1", f"{metrics['macro_f1']:.3f}"))
    pre = audit.get("preprocessing") or {}
    if pre.get("summary"):
        rows.append(("Preprocessing", pre["summary"]))
    choice = (audit.get("explanations") or {}).get("layer_choice")
    if choice:
        rows.append(("CAM layer", choice))
    rows.append(("Seconds", f"{result.seconds:.1f}"))
    findings = audit.get("findings") or []
    items = "".join(
        f"<li><b>{html.escape(str(f.get('severity')))}</b>: {html.escape(str(f.get('statement')))}"
        "</li>"
        if isinstance(f, dict)
        else f"<li>{html.escape(str(f))}</li>"
        for f in findings[:5]
    )
    links = " · ".join(
        f'<a href="{html.escape(p.as_posix())}" target="_blank">{html.escape(kind)}</a>'
        for kind, p in result.paths.items()
    )
    return (
        f"<div><b>Audit</b>: {html.escape(result.summary)}{_table(rows)}"
        + (f"<p>Findings:</p><ul>{items}</ul>" if items else "")
        + f"<p>Files: {links}</p></div>"
    )
