"""Render a few pages of each example report to PNG for the documentation.

For every ``example_reports/<name>/report.pdf`` this finds, with ``pdftotext``, the first page
of the report sections worth showing for that report (the cover is page 1), renders each of
them with ``pdftoppm -r 50 -png`` to ``docs/_static/pages/<name>-<page>.png`` and records them
in ``docs/_static/pages/manifest.json``, which the ``report-pages`` directive of the docs reads.

Pages are rendered again only when a PDF changed (its SHA-256 differs from the manifest's).
A missing ``example_reports/`` folder, a missing report or a missing ``pdftoppm`` is not an
error: the script says so and keeps what was rendered before. ``make docs`` runs it (from
``docs/conf.py``); run it by hand with::

    .venv/bin/python scripts/render_doc_pages.py [--force] [--resolution 50]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "example_reports"
OUT = ROOT / "docs" / "_static" / "pages"
MANIFEST = OUT / "manifest.json"

#: Section keys and the heading that starts each section in the PDF (the cover is page 1).
SECTIONS = {
    "cover": None,
    "model-card": "Model card",
    "performance": "Performance",
    "methods": "Explanation methods",
    "galleries": "Galleries by class",
    "class-average": "Where each class looks",
    "featvis": "Learned features",
    "trust": "Can the explanations be trusted?",
    "shortcut": "Shortcut detection",
    "appendix": "Appendix",
}

#: Which sections to show per example report (a few pages each keeps the repository small).
WANTED = {
    "digits": ["cover", "performance", "galleries", "featvis"],
    "shapes-clean": ["cover", "trust"],
    "shapes-shortcut": ["cover", "trust", "shortcut"],
}
DEFAULT_WANTED = ["cover", "performance", "trust"]


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"render_doc_pages: {message}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def page_texts(pdf: Path) -> list[str]:
    """The text of every page of ``pdf`` (``pdftotext``; pages end with a form feed)."""
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(pdf), "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pages = text.split("\f")
    return pages[:-1] if pages and not pages[-1].strip() else pages


def find_sections(pages: list[str]) -> dict[str, int]:
    """First page (1-based) on which each section heading stands alone on a line.

    The table of contents lists the headings too, but followed by dot leaders and page numbers,
    so a whole-line match skips it.
    """
    found: dict[str, int] = {"cover": 1} if pages else {}
    for key, heading in SECTIONS.items():
        if heading is None:
            continue
        for number, text in enumerate(pages, start=1):
            if any(line.strip() == heading for line in text.splitlines()):
                found[key] = number
                break
    return found


def render_page(pdf: Path, page: int, stem: Path, resolution: int) -> Path:
    """Render one page with ``pdftoppm -r RESOLUTION -png`` to ``stem.png``."""
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            str(resolution),
            "-png",
            "-f",
            str(page),
            "-l",
            str(page),
            "-singlefile",
            str(pdf),
            str(stem),
        ],
        check=True,
        capture_output=True,
    )
    return stem.with_suffix(".png")


def load_manifest() -> dict:
    """The manifest of rendered pages (empty when there is none yet)."""
    try:
        data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"reports": {}}
    return data if isinstance(data.get("reports"), dict) else {"reports": {}}


def render_report(pdf: Path, name: str, resolution: int) -> dict:
    """Render the wanted pages of one report; return its manifest entry."""
    pages = page_texts(pdf)
    sections = find_sections(pages)
    wanted = WANTED.get(name, DEFAULT_WANTED)
    entries: list[dict] = []
    seen: set[int] = set()
    for key in wanted:
        number = sections.get(key)
        if number is None or number in seen:
            continue
        seen.add(number)
        png = render_page(pdf, number, OUT / f"{name}-{number}", resolution)
        entries.append({"section": key, "page": number, "file": png.name})
    for old in OUT.glob(f"{name}-*.png"):
        if old.name not in {e["file"] for e in entries}:
            old.unlink()
    return {"sha256": _sha256(pdf), "total_pages": len(pages), "pages": entries}


def main(argv: list[str] | None = None) -> int:
    """Render what changed; return 0 (missing tools or reports are reported, not errors)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="render every page again")
    parser.add_argument("--resolution", type=int, default=50, help="pdftoppm -r (dpi)")
    parser.add_argument("--quiet", action="store_true", help="print only problems")
    parser.add_argument("--reports", type=Path, default=REPORTS, help="folder of <name>/report.pdf")
    args = parser.parse_args(argv)

    reports_dir: Path = args.reports
    pdfs = sorted(reports_dir.glob("*/report.pdf")) if reports_dir.is_dir() else []
    if not pdfs:
        _say(f"no example reports in {reports_dir}; keeping the pages rendered before", args.quiet)
        return 0
    missing = [tool for tool in ("pdftoppm", "pdftotext") if shutil.which(tool) is None]
    if missing:
        print(
            f"render_doc_pages: {', '.join(missing)} not found (install poppler-utils); "
            "keeping the pages rendered before",
            file=sys.stderr,
        )
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest()
    reports = manifest["reports"]
    changed = False
    for pdf in pdfs:
        name = pdf.parent.name
        entry = reports.get(name)
        files_ok = entry is not None and all((OUT / p["file"]).is_file() for p in entry["pages"])
        if not args.force and files_ok and entry.get("sha256") == _sha256(pdf):
            continue
        try:
            reports[name] = render_report(pdf, name, args.resolution)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace").strip()
            print(f"render_doc_pages: could not render {pdf}: {detail}", file=sys.stderr)
            continue
        changed = True
        _say(f"rendered {len(reports[name]['pages'])} pages of {pdf}", args.quiet)
    if changed:
        MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
