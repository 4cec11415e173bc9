"""The PDF as a reader gets it, measured: nothing past the margins, page 1's text layer in
reading order, chart text at least 6 pt as printed, long tables that repeat their header, a
tagged PDF, and the archival / accessible variant declared when asked for."""

from __future__ import annotations

import base64
import copy
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from reporter.bundle import read_bundle
from reporter.cli import cli
from reporter.config import AuditConfig
from reporter.errors import ReporterError
from reporter.report.figures import MIN_FONT_KEY
from reporter.report.render import pdf_variants, render_html, render_pdf
from reporter.report.views import report_figures
from tests.report_bundle import audit_small_bundle

pypdf = pytest.importorskip("pypdf")
POPPLER = shutil.which("pdftotext") and shutil.which("pdftoppm")
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext) not installed")

MM = 72 / 25.4  # points per millimetre
MARGIN_RIGHT_MM = 15  # @page margin in report.css


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return audit_small_bundle(tmp_path_factory.mktemp("pdf"))


def _pdftotext(pdf: Path, page: int, *, body_only: bool = False) -> str:
    """The text layer of one page; ``body_only``: inside the page margins (A4, 20 mm top and
    18 mm bottom: no running header or page number)."""
    crop = ["-x", "0", "-y", f"{20 * MM:.0f}", "-W", "595", "-H", f"{(297 - 38) * MM:.0f}"]
    return subprocess.run(
        [
            "pdftotext",
            "-f",
            str(page),
            "-l",
            str(page),
            *(crop if body_only else []),
            str(pdf),
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


class _Text(HTMLParser):
    """The visible text of an HTML document (no script, style or attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _squash(text: str) -> str:
    """Text without white space or list markers (drawn by CSS, not in the HTML's text)."""
    return re.sub(r"\s+|•", "", text).lower()


@needs_poppler
def test_nothing_is_drawn_past_the_right_margin(bundle: Path, tmp_path: Path) -> None:
    """Every page rendered at 50 dpi: the right margin (15 mm, less 1 mm of anti-aliasing)
    holds only white pixels, so no tile, image or table runs off the page."""
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", str(bundle / "report.pdf"), str(tmp_path / "p")],
        check=True,
    )
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) >= 3
    for png in pages:
        arr = np.asarray(Image.open(png).convert("L"))
        width_mm = 210
        first = int(np.ceil(arr.shape[1] * (width_mm - MARGIN_RIGHT_MM + 1) / width_mm))
        margin = arr[:, first:]
        dark = np.argwhere(margin < 245)
        assert not len(dark), f"{png.name}: ink in the right margin at {dark[:3].tolist()}"


@needs_poppler
def test_cover_text_reads_in_order(bundle: Path) -> None:
    """Every line of page 1's text layer is a run of the document's text: the running header
    (drawn on later pages) does not interleave with the title, and no letter-spaced heading
    falls apart into single letters."""
    audit = read_bundle(bundle)[0]
    parser = _Text()
    parser.feed((bundle / "report.html").read_text(encoding="utf-8"))
    document = _squash(" ".join(parser.parts))
    page1 = _pdftotext(bundle / "report.pdf", 1, body_only=True)
    lines = [line for line in page1.splitlines() if line.strip()]
    assert len(lines) > 5
    for line in lines:
        # the PDF writes evidence links as "→ label (p. N)": the arrow and the page number
        # come from the stylesheet (target-counter), not from the HTML's text
        line = re.sub(r"\(p\. \d+\)", "", line).replace("→", "")
        assert _squash(line) in document, f"page 1 line out of order: {line!r}"
    running = f"{audit['model']['arch']} · {audit['dataset']['name']}"
    assert running not in _pdftotext(bundle / "report.pdf", 1)
    assert running in _pdftotext(bundle / "report.pdf", 2)


def _placed_images(page, reader) -> list[tuple[str, float, float]]:
    """(name, width, height) in points of every image XObject drawn on a page, from the
    content stream's transformation matrices."""
    from pypdf.generic import ContentStream

    ops = ContentStream(page.get_contents(), reader).operations
    ctm = np.eye(3)
    stack: list[np.ndarray] = []
    placed = []
    for operands, op in ops:
        if op == b"q":
            stack.append(ctm.copy())
        elif op == b"Q":
            ctm = stack.pop()
        elif op == b"cm":
            a, b, c, d, e, f = (float(x) for x in operands)
            ctm = np.array([[a, b, 0], [c, d, 0], [e, f, 1]]) @ ctm
        elif op == b"Do":
            w = float(np.hypot(ctm[0, 0], ctm[0, 1]))
            h = float(np.hypot(ctm[1, 0], ctm[1, 1]))
            placed.append((str(operands[0]), w, h))
    return placed


def _chart_pngs(html: str) -> list[Image.Image]:
    uris = re.findall(
        r'<figure class="chart[^"]*"[^>]*>\s*<img src="data:image/png;base64,([^"]+)"', html
    )
    return [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]


def test_chart_text_is_at_least_6_pt_as_printed(bundle: Path) -> None:
    """Each chart records its smallest font and DPI; the PDF places it at a measured width.
    The printed size of that font, font x placed width / drawn width, is >= 6 pt."""
    charts = _chart_pngs((bundle / "report.html").read_text(encoding="utf-8"))
    assert len(charts) >= 3  # confusion, reliability, confidence (and the trust curves)
    reader = pypdf.PdfReader(str(bundle / "report.pdf"))
    placed: dict[tuple[int, int], float] = {}
    for page in reader.pages:
        xobjects = page["/Resources"].get("/XObject") or {}
        for name, width_pt, _ in _placed_images(page, reader):
            obj = xobjects[name].get_object()
            if obj.get("/Subtype") == "/Image":
                placed[(int(obj["/Width"]), int(obj["/Height"]))] = width_pt
    for png in charts:
        font_pt = float(png.info[MIN_FONT_KEY])
        dpi = float(png.info["dpi"][0])
        drawn_pt = png.width / dpi * 72
        assert png.size in placed, f"chart {png.size} not found in the PDF"
        printed = font_pt * placed[png.size] / drawn_pt
        assert printed >= 6.0, f"chart {png.size}: smallest text {printed:.1f} pt"


def _long_table_audit(bundle: Path) -> tuple[dict, dict]:
    audit, artifacts = read_bundle(bundle)
    audit = copy.deepcopy(audit)
    audit["skipped"] = [
        {"path": f"images/unreadable_{i:03d}.png", "reason": "not an image"} for i in range(140)
    ]
    return audit, report_figures(audit, artifacts)


@needs_poppler
def test_long_table_repeats_its_header_and_variant_is_declared(
    bundle: Path, tmp_path: Path
) -> None:
    """A skipped-files table of 140 rows spans pages; each page it is on starts with its
    header row. Rendered as PDF/A-3b, the PDF declares it (XMP pdfaid) and stays tagged."""
    audit, figures = _long_table_audit(bundle)
    shutil.copytree(bundle / "artifacts", tmp_path / "artifacts")
    pdf = render_pdf(render_html(audit, figures), tmp_path / "long.pdf", tmp_path, "pdf/a-3b")
    reader = pypdf.PdfReader(str(pdf))
    pages = [i + 1 for i in range(len(reader.pages)) if "unreadable_" in _pdftotext(pdf, i + 1)]
    assert len(pages) >= 2
    for number in pages:
        text = _pdftotext(pdf, number)
        header = re.search(r"^file\s*$|^file\s+reason\s*$", text, flags=re.M)
        first_row = text.index("unreadable_")
        assert header and header.start() < first_row, f"page {number}: no header above the rows"
    xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode("utf-8")
    assert re.search(r"pdfaid:part[^0-9]{0,3}3", xmp) and re.search(
        r"pdfaid:conformance[^A-Z]{0,3}B", xmp
    )
    assert "/StructTreeRoot" in reader.trailer["/Root"]


def test_default_pdf_is_tagged(bundle: Path) -> None:
    root = pypdf.PdfReader(str(bundle / "report.pdf")).trailer["/Root"]
    assert "/StructTreeRoot" in root
    assert root["/MarkInfo"]["/Marked"]


def test_ua_variant_is_declared(tmp_path: Path) -> None:
    html = (
        '<!doctype html><html lang="en"><head><title>t</title></head><body><h1>t</h1></body></html>'
    )
    pdf = render_pdf(html, tmp_path / "ua.pdf", tmp_path, "pdf/ua-1")
    root = pypdf.PdfReader(str(pdf)).trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8")
    assert re.search(r"pdfuaid:part[^0-9]{0,3}1", xmp)
    assert "/StructTreeRoot" in root


def test_unknown_variant_is_one_line_error(bundle: Path, tmp_path: Path) -> None:
    assert "pdf/a-3b" in pdf_variants() and "pdf/ua-1" in pdf_variants()
    with pytest.raises(ReporterError, match=r"Unknown pdf_variant 'pdf/z'.*pdf/a-3b"):
        AuditConfig(pdf_variant="pdf/z")
    with pytest.raises(ReporterError, match="pdf_variant = 3 is an integer"):
        AuditConfig(pdf_variant=3)  # type: ignore[arg-type]
    result = CliRunner().invoke(
        cli, ["render", str(bundle), "--out", str(tmp_path / "r"), "--pdf-variant", "pdf/z"]
    )
    assert result.exit_code == 2
    assert "Unknown PDF variant 'pdf/z'" in result.output
    assert not (tmp_path / "r").exists()


MEASURES = (
    "precision",
    "recall",
    "F1",
    "rank correlation",
    "SSIM",
    "deletion area",
    "insertion area",
    "average drop",
    "increase in confidence",
    "pointing game",
    "energy inside",
    "location agreement",
)


def test_table_headers_link_to_the_glossary_and_every_link_resolves(bundle: Path) -> None:
    html = (bundle / "report.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    targets = re.findall(r'href="#([^"]*)"', html)
    assert targets
    missing = sorted({t for t in targets if t not in ids})
    assert not missing, f"links to missing anchors: {missing}"
    # column headers of the tables (row headers such as the appendix's settings are names)
    heads = "".join(re.findall(r"<thead\b.*?</thead>", html, flags=re.S))
    headers = re.findall(r"<th\b[^>]*>(.*?)</th>", heads, flags=re.S)
    linked = 0
    for inner in headers:
        text = re.sub(r"<[^>]+>", "", inner)
        if any(re.search(rf"\b{re.escape(m)}\b", text) for m in MEASURES):
            assert 'class="term"' in inner, f"table header without a glossary link: {text!r}"
            linked += 1
    assert linked >= 8  # performance and trust tables


def test_glossary_entries_state_scale_and_direction() -> None:
    from reporter.report.glossary import GLOSSARY

    for key in ("ece", "macro_f1", "top5", "spearman", "ssim", "pointing_game"):
        assert key in GLOSSARY
    for key in ("energy_inside", "deletion", "insertion", "average_drop", "sanity", "recall"):
        assert key in GLOSSARY
    assert GLOSSARY["ece"].better == "lower" and GLOSSARY["insertion"].better == "higher"
    for key, term in GLOSSARY.items():
        assert re.fullmatch(r"[a-z0-9_]+", key)
        assert term.name and term.meaning.endswith(".") and term.scale and term.better


def test_class_ids_are_unique_and_safe() -> None:
    from reporter.report.render import slug

    names = ["cat", "Cat", "dog face", "dog-face", "<b>", "猫", ""]
    ids = [slug(n) for n in names]
    assert len(set(ids)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids)
    assert slug("cat") == "cat" and slug("dog face") == slug("dog face")


@needs_poppler
def test_no_heading_at_a_page_foot_and_no_mostly_empty_page(bundle: Path, tmp_path: Path) -> None:
    """The last line of text on a page is never a section heading (it would be stranded
    there), and every page but the cover and the last is filled at least 40 % of its height
    (chapters flow on; no forced break leaves a page mostly empty)."""
    html = (bundle / "report.html").read_text(encoding="utf-8")
    headings = {
        _squash(re.sub(r"<[^>]+>", "", h))
        for h in re.findall(r"<h[234]\b[^>]*>(.*?)</h[234]>", html, flags=re.S)
    }
    pdf = bundle / "report.pdf"
    n = len(pypdf.PdfReader(str(pdf)).pages)
    for number in range(1, n + 1):
        lines = [ln for ln in _pdftotext(pdf, number, body_only=True).splitlines() if ln.strip()]
        assert lines and _squash(lines[-1]) not in headings, f"page {number} ends with a heading"
    subprocess.run(["pdftoppm", "-png", "-r", "30", str(pdf), str(tmp_path / "p")], check=True)
    pages = sorted(tmp_path.glob("p-*.png"))
    for png in pages[1:-1]:
        arr = np.asarray(Image.open(png).convert("L"))
        top, bottom = round(arr.shape[0] * 20 / 297), round(arr.shape[0] * (297 - 18) / 297)
        inked = np.flatnonzero((arr[top:bottom] < 235).any(axis=1))
        filled = (inked.max() + 1) / (bottom - top) if len(inked) else 0.0
        assert filled >= 0.4, f"{png.name} is only {filled:.0%} filled"


def test_failed_feature_visualizations_are_marked_not_drawn(bundle: Path) -> None:
    """A channel whose optimisation did not raise its activation is reported as failed and
    its synthesised image is not drawn; the others are drawn."""
    audit, artifacts = read_bundle(bundle)
    audit = copy.deepcopy(audit)
    layer = next(iter(audit["featvis"]["layers"].values()))
    channels = [layer["channels"][str(ch)] for ch in layer["rendered"]]
    assert len(channels) >= 2
    channels[0]["objective_end"] = channels[0]["objective_start"]  # flat: failed
    channels[0]["status"], channels[0]["reason"] = "failed", "the activation did not rise"
    channels[1]["objective_start"], channels[1]["objective_end"] = 0.5, 1.5  # raised: drawn
    channels[1]["status"] = "converged"
    figures = report_figures(audit, artifacts)
    html = render_html(audit, figures)
    failed = sum(
        c.get("status") == "failed"
        for info in audit["featvis"]["layers"].values()
        for c in (info["channels"][str(ch)] for ch in info["rendered"])
    )
    assert html.count("visualization failed") == failed >= 1
    first = next(iter(figures["featvis"]["layers"].values()))["channels"]
    assert first[str(layer["rendered"][0])]["render"] not in html.split("Visualised channels")[1]
    assert first[str(layer["rendered"][1])]["render"] in html


def test_render_writes_the_variant_the_audit_asked_for(bundle: Path, tmp_path: Path) -> None:
    """``pdf_variant`` in the audit's configuration is kept by ``reporter render``."""
    import json

    copy_dir = tmp_path / "b"
    shutil.copytree(bundle, copy_dir)
    audit_file = copy_dir / "audit.json"
    audit = json.loads(audit_file.read_text(encoding="utf-8"))
    assert audit["config"]["pdf_variant"] is None
    audit["config"]["pdf_variant"] = "pdf/ua-1"
    audit_file.write_text(json.dumps(audit), encoding="utf-8")
    result = CliRunner().invoke(cli, ["render", str(copy_dir), "--format", "pdf"])
    assert result.exit_code == 0, result.output
    root = pypdf.PdfReader(str(copy_dir / "report.pdf")).trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8")
    assert re.search(r"pdfuaid:part[^0-9]{0,3}1", xmp)
