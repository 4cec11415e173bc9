"""``.. report-pages:: SECTION``: page images of the example reports for one report section.

Reads ``docs/_static/pages/manifest.json`` (written by ``scripts/render_doc_pages.py``) and
shows, side by side, the rendered page on which SECTION starts in each example report. Where no
example report has such a page, it shows a short note instead (never a build warning).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

PAGES = Path(__file__).resolve().parents[1] / "_static" / "pages"
ORDER = ("digits", "shapes-clean", "shapes-shortcut")


def _manifest() -> dict:
    try:
        data = json.loads((PAGES / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("reports", {}) if isinstance(data, dict) else {}


class ReportPages(Directive):
    """Figures of the example reports' pages for one section key."""

    required_arguments = 1
    has_content = False
    option_spec: ClassVar[dict] = {"reports": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        section = self.arguments[0]
        reports = _manifest()
        wanted = [r.strip() for r in self.options.get("reports", "").split(",") if r.strip()]
        names = sorted(reports, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
        lines: list[str] = []
        for name in names:
            if wanted and name not in wanted:
                continue
            entry = reports[name]
            for page in entry.get("pages", []):
                if page.get("section") != section or not (PAGES / page["file"]).is_file():
                    continue
                lines += [
                    f".. figure:: /_static/pages/{page['file']}",
                    f"   :alt: {name} example report, page {page['page']}",
                    "   :width: 280px",
                    f"   :target: _static/pages/{page['file']}",
                    "",
                    f"   ``example_reports/{name}/report.pdf``, page {page['page']} of "
                    f"{entry.get('total_pages', '?')}",
                    "",
                ]
        container = nodes.container(classes=["report-pages"])
        if not lines:
            lines = [
                "*No example report with this section was found when these pages were built: "
                "page images appear here once* ``example_reports/<name>/report.pdf`` *exists "
                "and* ``make docs`` *runs again.*",
            ]
            container["classes"].append("report-pages-missing")
        self.state.nested_parse(StringList(lines, source="report-pages"), 0, container)
        return [container]


def setup(app):
    """Register the directive."""
    app.add_directive("report-pages", ReportPages)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
