"""HTML (Jinja2) and PDF (WeasyPrint) rendering of the report context.

- Templates are found first in ``--template-dir`` (if given), then in the default theme; a
  template may not resolve to a file outside its folder (no ``..``, no symlinks out).
- Jinja2 runs with autoescape and ``StrictUndefined``: a class name holding HTML is shown as
  text, and a template that asks for a missing value fails loudly instead of printing nothing.
- With ``--template-dir``, every template (``report.html``, ``report.css`` and the default
  theme's blocks they use) renders in Jinja2's ``ImmutableSandboxedEnvironment``: no
  attribute starting with ``_`` (no ``__globals__``, ``__class__``, ``__subclasses__``), no
  unsafe callables, no changing the report's data, ``range`` capped; a template that tries is
  a one-line error. Only the package's own theme, with no ``--template-dir``, uses the plain
  environment.
- The PDF renderer fetches nothing from the network and reads no file outside the report
  folder: only ``data:`` URIs and files inside ``base_dir`` are resolved.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from reporter.errors import ReporterError
from reporter.explain.registry import METHODS
from reporter.report.glossary import GLOSSARY

__all__ = [
    "ReportSandbox",
    "default_template_dir",
    "pdf_variants",
    "render_html",
    "render_pdf",
    "slug",
    "template_environment",
    "template_errors",
]

log = logging.getLogger(__name__)


def default_template_dir() -> Path:
    """The packaged default theme (``reporter/templates`` in a wheel, ``templates/`` in a
    source checkout)."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "templates"
    if packaged.is_dir():
        return packaged
    return here.parent / "templates"


def slug(name: object) -> str:
    """An HTML id fragment for a name (a class name): lowercase ASCII letters, digits and
    ``-``. A name that is not already such a slug gets a short hash of itself appended, so
    two different names never share an id (``Cat`` and ``cat`` give ``cat-…`` and ``cat``)."""
    text = str(name)
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if base == text and base:
        return base
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]
    return f"{base}-{digest}" if base else f"x-{digest}"


#: The largest string or list a sandboxed template may build with ``*`` (or number with ``**``).
MAX_SANDBOX_SIZE = 10_000_000


class ReportSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, plus a cap on ``*`` and ``**`` (a template that builds a
    gigabyte string is refused instead of exhausting memory)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(n, int)
                    and len(seq) * n > MAX_SANDBOX_SIZE
                ):
                    raise jinja2.sandbox.SecurityError("the result of '*' would be too large")
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise jinja2.sandbox.SecurityError("the exponent of '**' is too large")
        return super().call_binop(context, operator, left, right)


class ConfinedLoader(jinja2.FileSystemLoader):
    """A file-system loader that refuses templates resolving outside its folder."""

    def get_source(self, environment: jinja2.Environment, template: str):
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        roots = [os.path.realpath(p) for p in self.searchpath]
        if not any(real == r or real.startswith(r + os.sep) for r in roots):
            raise ReporterError(
                f"Template {template!r} in {self.searchpath[0]} points outside its folder "
                f"({real}); templates may only use files inside --template-dir."
            )
        return source, filename, uptodate


def template_environment(template_dir: str | Path | None = None) -> jinja2.Environment:
    """The Jinja2 environment: user templates first, then the default theme.

    With ``template_dir`` the environment is a :class:`ReportSandbox` (Jinja2's immutable
    sandbox); only the package's own theme alone renders in a plain ``Environment``.
    """
    loaders = []
    if template_dir is not None:
        path = Path(template_dir)
        if not path.is_dir():
            raise ReporterError(f"--template-dir {path} is not a folder.")
        loaders.append(ConfinedLoader(str(path)))
    loaders.append(ConfinedLoader(str(default_template_dir())))
    # user templates are code from outside the package: they run in the sandbox
    env_class = ReportSandbox if template_dir is not None else jinja2.Environment
    env = env_class(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda x, digits=1: "n/a" if x is None else f"{x * 100:.{digits}f}%"
    env.filters["num"] = lambda x, digits=3: "n/a" if x is None else f"{x:.{digits}f}"
    env.filters["thousands"] = lambda x: f"{x:,}"
    env.filters["tojson_pretty"] = lambda x: json.dumps(x, indent=2, ensure_ascii=False)
    env.filters["slug"] = slug
    return env


def render_html(
    audit: dict[str, Any], figures: dict[str, Any], template_dir: str | Path | None = None
) -> str:
    """Render ``report.html`` (self-contained: CSS inlined, images as data URIs)."""
    env = template_environment(template_dir)
    with template_errors(template_dir):
        css = env.get_template("report.css").render()
        template = env.get_template("report.html")
        return template.render(
            audit=audit,
            fig=figures,
            css=css,
            titles={m: spec.title for m, spec in METHODS.items()},
            glossary=GLOSSARY,
        )


@contextmanager
def template_errors(template_dir: str | Path | None) -> Iterator[None]:
    """Turn what rendering a template can raise into one-line :class:`ReporterError` messages
    (a missing template, an undefined value, a syntax error, a sandbox violation, and a user
    template's runtime error); the default theme's own bugs still raise as they are."""
    try:
        yield
    except ReporterError:
        raise
    except jinja2.TemplateNotFound as exc:
        raise ReporterError(f"Template {exc.name!r} not found in the template folders.") from exc
    except jinja2.UndefinedError as exc:
        raise ReporterError(f"A report template uses an undefined value: {exc}.") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ReporterError(
            f"Template syntax error in {exc.filename or exc.name}, line {exc.lineno}: {exc.message}"
        ) from exc
    except jinja2.sandbox.SecurityError as exc:
        raise ReporterError(
            f"A report template in {template_dir} tried something templates may not do "
            f"({_one_line(exc)}); templates run in a sandbox and may only show the report's "
            "values."
        ) from None
    except Exception as exc:  # a user template's runtime error (1/0, a bad filter)
        if template_dir is None:
            raise
        raise ReporterError(
            f"A report template in {template_dir} failed: {type(exc).__name__}: {_one_line(exc)}."
        ) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _confined_fetcher(base_dir: Path):
    """A WeasyPrint URL fetcher that serves ``data:`` URIs and files inside ``base_dir`` only."""
    from urllib.parse import unquote, urlparse

    from weasyprint import urls

    root = os.path.realpath(base_dir)

    def allowed(url: str) -> bool:
        if url.startswith("data:"):
            return True
        parsed = urlparse(url)
        if parsed.scheme != "file":
            return False
        real = os.path.realpath(unquote(parsed.path))
        return real.startswith(root + os.sep)

    base = getattr(urls, "URLFetcher", None)
    if base is not None:

        class Fetcher(base):  # type: ignore[misc, valid-type]
            def fetch(self, url, headers=None):
                if not allowed(url):
                    raise ValueError(f"blocked: the report may not load {url[:80]}")
                return super().fetch(url, headers)

        return Fetcher(fail_on_errors=False)

    def fetcher(url: str, *args: Any, **kwargs: Any):  # pragma: no cover - old WeasyPrint
        if not allowed(url):
            raise ValueError(f"blocked: the report may not load {url[:80]}")
        return urls.default_url_fetcher(url, *args, **kwargs)

    return fetcher


def pdf_variants() -> tuple[str, ...]:
    """The PDF variants the installed WeasyPrint can write (``pdf/a-3b``, ``pdf/ua-1``, ...)."""
    try:
        from weasyprint.pdf import VARIANTS
    except ImportError:  # pragma: no cover - WeasyPrint < 58 has no variants
        return ()
    return tuple(sorted(v for v in VARIANTS if v != "debug"))


def render_pdf(html: str, path: Path, base_dir: Path, variant: str | None = None) -> Path:
    """Render HTML to a PDF (print CSS, A4) with a fetcher confined to ``base_dir``.

    The PDF is tagged (a structure tree, for screen readers and reflow) where WeasyPrint
    supports it. ``variant`` asks for an archival or accessible PDF (``pdf/a-3b``,
    ``pdf/ua-1``, ...: :func:`pdf_variants`); WeasyPrint declares it in the XMP metadata.
    """
    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    options: dict[str, Any] = {}
    if "pdf_tags" in getattr(weasyprint, "DEFAULT_OPTIONS", {}):
        options["pdf_tags"] = True
    if variant is not None:
        if variant not in pdf_variants():
            raise ReporterError(
                f"Unknown PDF variant {variant!r}. This WeasyPrint writes: "
                f"{', '.join(pdf_variants()) or 'none'}."
            )
        options["pdf_variant"] = variant
    document = weasyprint.HTML(
        string=html, base_url=str(base_dir) + os.sep, url_fetcher=_confined_fetcher(base_dir)
    )
    with warnings.catch_warnings():
        # WeasyPrint opens its sRGB profile for PDF/A and never closes it: its ResourceWarning
        # is WeasyPrint's, raised when the document is freed (collected here, inside the filter)
        warnings.simplefilter("ignore", ResourceWarning)
        document.write_pdf(str(path), **options)
        del document
        gc.collect()
    return path
