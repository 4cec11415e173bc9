"""Sphinx configuration for the reporter documentation.

Built by ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``): warnings
are errors. Before the build, ``scripts/render_doc_pages.py`` renders a few pages of each
example report (``example_reports/*/report.pdf``) to ``docs/_static/pages`` with ``pdftoppm``;
the ``report-pages`` directive (``docs/_ext/reportpages.py``) shows them on the report page.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import reporter  # noqa: E402

project = "reporter"
author = "the reporter authors"
copyright = "2026, the reporter authors"
release = reporter.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_click",
    "reportpages",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
html_theme = "furo"
html_title = f"reporter {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
pygments_style = "friendly"

# Google-style docstrings; "Attributes:" as :ivar: fields, so a dataclass field documented in
# the class docstring is not described twice.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# No network: no intersphinx, no remote images.
suppress_warnings: list[str] = []

# Quotes and ellipses only: "--model" in the CLI reference must stay two hyphens, not an en
# dash ("-" "-" -> "–" is docutils' default "smart" dash).
smartquotes_action = "qe"


def _substitutions() -> str:
    """``|name|`` substitutions for numbers the prose quotes, read from the code itself."""
    from reporter.audit import trust as stage
    from reporter.audit.features import AUTO_SIDE
    from reporter.config import AuditConfig
    from reporter.metrics import trust as metrics
    from reporter.metrics.trust import interventions

    defaults = AuditConfig()
    values = {
        "default_epochs": defaults.epochs,
        "default_trust_samples": defaults.trust_samples,
        "default_featvis_channels": defaults.featvis_channels,
        "default_featvis_steps": defaults.featvis_steps,
        "featvis_auto_side": AUTO_SIDE,
        "default_samples_per_class": defaults.samples_per_class,
        "default_top_k": defaults.top_k,
        "sanity_images": stage.SANITY_IMAGES,
        "max_cascade": stage.MAX_CASCADE,
        "faith_images": stage.FAITHFULNESS_IMAGES,
        "curve_steps": stage.CURVE_STEPS,
        "curve_points": stage.CURVE_STEPS + 1,
        "curve_passes": 2 * (stage.CURVE_STEPS + 1),
        "spearman_threshold": metrics.SPEARMAN_THRESHOLD,
        "ssim_threshold": metrics.SSIM_THRESHOLD,
        "outside_threshold": metrics.OUTSIDE_THRESHOLD,
        "lift_threshold": metrics.LIFT_THRESHOLD,
        "border_excess_threshold": metrics.BORDER_EXCESS_THRESHOLD,
        "sanity_seeds": len(stage.SANITY_SEEDS),
        "tie_orders": stage.TIE_ORDERS,
        "random_maps": stage.RANDOM_MAPS,
        "drop_threshold": interventions.DROP_THRESHOLD,
        "drop_lower": interventions.CI_LOWER_THRESHOLD,
        "change_threshold": interventions.CHANGE_THRESHOLD,
        "change_lower": interventions.CHANGE_LOWER_THRESHOLD,
        "region_area": interventions.REGION_AREA,
        "max_region_area": interventions.MAX_REGION_AREA,
        "flip_threshold": interventions.FLIP_THRESHOLD,
        "flip_lower": interventions.FLIP_LOWER_THRESHOLD,
        "pull_threshold": interventions.PULL_THRESHOLD,
        "pull_lower": interventions.PULL_LOWER_THRESHOLD,
    }
    return "\n".join(f".. |{k}| replace:: {v}" for k, v in values.items()) + "\n"


rst_prolog = _substitutions()


def _render_example_pages() -> None:
    """Render the example reports' pages (skipped quietly where pdftoppm or a PDF is missing)."""
    spec = importlib.util.spec_from_file_location(
        "render_doc_pages", ROOT / "scripts" / "render_doc_pages.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quiet"])


_render_example_pages()


def setup(app):
    """Furo draws its own "On this page" table of contents beside every page and shows a red
    "ERROR: Adding a table of contents" box for each ``.. contents::`` directive: the directive
    is kept in the sources (it reads well on GitHub) and renders as nothing here."""
    from docutils.parsers.rst import Directive, directives

    class NoContents(Directive):
        optional_arguments = 1
        final_argument_whitespace = True
        option_spec = {  # noqa: RUF012 - docutils' API
            "local": directives.flag,
            "depth": directives.nonnegative_int,
            "backlinks": directives.unchanged,
            "class": directives.class_option,
        }

        def run(self):
            return []

    app.add_directive("contents", NoContents, override=True)
    return {"parallel_read_safe": True}
