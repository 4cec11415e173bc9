"""The documentation cannot rot: every example in ``docs/*.rst`` is executed or checked here.

Conventions the docs follow (and these tests enforce):

- Every ``.. code-block:: python`` block runs. The blocks of one page run in order, in one
  namespace, in a shared temporary workspace that holds ``model.pt`` (an untrained ``gapnet``
  with the digits classes at 16 x 16, so examples check shapes, never accuracy) and
  ``report/`` (a tiny real audit, written with the template example of ``templates.rst``; a
  copy stays in ``branded/``).
- Every ``reporter VERB ...`` command in a code block (bash, text, yaml ...) or in an inline
  literal parses with the real click command (nothing runs).
- Every ``make TARGET`` shown is a Makefile target.
- The ``full-config`` TOML example of ``own-model.rst`` names every ``AuditConfig`` field and
  every model-card field, states its non-default values, and loads with ``load_config``; every
  other TOML example loads too.
- The ``html+jinja`` template example only overrides blocks of ``base.html`` and renders.
- Every object the API page documents can be imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import shutil
import textwrap
import tomllib
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.rst"))
COMMAND_LANGS = {"bash", "console", "shell", "sh", "text", "yaml", "none"}


@dataclass
class Block:
    """One ``.. code-block::`` of a page."""

    page: str
    line: int
    lang: str
    options: dict[str, str]
    code: str


def code_blocks(path: Path) -> list[Block]:
    """All ``.. code-block:: LANG`` blocks of an rst file, dedented, with their options."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)\.\. code-block::\s*(\S+)\s*$", lines[i])
        if not match:
            i += 1
            continue
        base = len(match.group(1))
        start = i + 1
        i += 1
        options: dict[str, str] = {}
        while i < len(lines) and re.match(r"^\s+:[\w-]+:", lines[i]):
            key, _, value = lines[i].strip()[1:].partition(":")
            options[key] = value.strip()
            i += 1
        body: list[str] = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= base:
                break
            body.append(line)
            i += 1
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        blocks.append(Block(path.name, start, match.group(2), options, code))
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in code_blocks(page)]


def _blocks(lang: str) -> list[Block]:
    return [b for b in ALL_BLOCKS if b.lang == lang]


# --------------------------------------------------------------------------- workspace


def _template_example() -> str:
    blocks = [b for b in _blocks("html+jinja") if b.page == "templates.rst"]
    assert len(blocks) == 1, "templates.rst should hold one html+jinja report.html example"
    return blocks[0].code


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``model.pt`` and a tiny real ``report/`` made with the template example."""
    import reporter
    from reporter.config import AuditConfig
    from reporter.models import ModelMeta, gapnet, save_checkpoint

    ws = tmp_path_factory.mktemp("docs-workspace")
    meta = ModelMeta(
        arch="gapnet",
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        input_size=(16, 16),
        channels=1,
    )
    save_checkpoint(ws / "model.pt", gapnet(1, 10), meta)
    branding = ws / "branding"
    branding.mkdir()
    (branding / "report.html").write_text(_template_example(), encoding="utf-8")
    reporter.run_audit(
        AuditConfig(
            model=str(ws / "model.pt"),
            data="digits",
            out=str(ws / "branded"),
            formats=("json", "html"),
            template_dir=str(branding),
            max_images=30,
            samples_per_class=1,
            featvis_channels=0,
            trust_samples=0,
            quiet=True,
        )
    )
    # the pages' examples write their own reports into report/ (each replaces the whole
    # bundle), so the template example's report is kept apart in branded/
    shutil.copytree(ws / "branded", ws / "report")
    return ws


# --------------------------------------------------------------------------- python examples

PYTHON_PAGES = sorted({b.page for b in _blocks("python")})


def test_docs_have_python_examples() -> None:
    assert {"quickstart.rst", "own-model.rst", "methods.rst", "featvis.rst"} <= set(PYTHON_PAGES)


@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_examples_run(page: str, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    namespace: dict[str, object] = {"__name__": f"docs_{page.replace('-', '_')[:-4]}"}
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream; the own-model page still shows how to save it.
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning
        )
        for block in (b for b in _blocks("python") if b.page == page):
            code = compile(block.code, f"docs/{page}:{block.line}", "exec")
            exec(code, namespace)


# --------------------------------------------------------------------------- shell commands


def _command_lines(block: Block) -> list[str]:
    return block.code.replace("\\\n", " ").splitlines()


def _inline_literals(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    out = []
    for match in re.finditer(r"``(.+?)``", text, flags=re.S):
        out.append((text.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())))
    return out


_REPORTER = re.compile(r"(?:^|[\s/(`])reporter\s+([a-z][\w-]*)(.*)$")
_STOP = {"&&", "||", ";", "|", ">", ">>", "2>", "2>&1", "&"}


def _extract(text: str) -> tuple[str, list[str]] | None:
    match = _REPORTER.search(text)
    if not match:
        return None
    rest = re.sub(r"\$\([^)]*\)", "X", match.group(2))
    tokens = shlex.split(rest, comments=True)
    args: list[str] = []
    for tok in tokens:
        if tok in _STOP or tok.startswith((">", "2>")):
            break
        args.append(tok)
    return match.group(1), args


def _commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for block in ALL_BLOCKS:
        if block.lang not in COMMAND_LANGS:
            continue
        for offset, line in enumerate(_command_lines(block)):
            got = _extract(line)
            if got:
                found.append((f"{block.page}:{block.line + offset}", *got))
    for page in PAGES:
        for line, literal in _inline_literals(page):
            if literal.startswith("reporter "):
                got = _extract(literal)
                if got:
                    found.append((f"{page.name}:{line}", *got))
    return found


COMMANDS = _commands()


def test_docs_show_every_verb() -> None:
    from reporter.cli import cli

    assert {verb for _, verb, _ in COMMANDS} == set(cli.commands)


@pytest.mark.parametrize(
    ("where", "verb", "args"), COMMANDS, ids=[f"{w}-{v}" for w, v, _ in COMMANDS]
)
def test_shell_command_parses(where: str, verb: str, args: list[str]) -> None:
    from reporter.cli import cli

    assert verb in cli.commands, f"{where}: `reporter {verb}` is not a command"
    command = cli.commands[verb]
    # A bare mention (``reporter featvis``) only has to name a command: ask for its help.
    args = list(args) or ["--help"]
    try:
        with command.make_context(verb, args):
            pass
    except click.exceptions.Exit:
        pass
    except click.ClickException as exc:
        pytest.fail(f"{where}: `reporter {verb} {shlex.join(args)}`: {exc.format_message()}")


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    shown = set()
    for block in ALL_BLOCKS:
        if block.lang in COMMAND_LANGS:
            shown |= set(re.findall(r"(?:^|\s)make ([\w-]+)", block.code))
    for page in PAGES:
        shown |= set(re.findall(r"``make ([\w-]+)", page.read_text(encoding="utf-8")))
    assert shown, "the docs should show make targets"
    assert shown <= targets, f"not Makefile targets: {sorted(shown - targets)}"


# --------------------------------------------------------------------------- configuration


def _full_config() -> Block:
    found = [b for b in _blocks("toml") if b.options.get("name") == "full-config"]
    assert len(found) == 1, "own-model.rst should hold one TOML block named full-config"
    return found[0]


def _uncommented(code: str) -> str:
    return re.sub(r"^#\s*(\w+ = .*)$", r"\1", code, flags=re.M)


def test_config_example_names_every_option() -> None:
    from reporter.config import MODEL_CARD_FIELDS, AuditConfig

    code = _full_config().code
    data = tomllib.loads(_uncommented(code))
    names = {f.name for f in fields(AuditConfig)} - {"model_card"}
    assert set(data) - {"model_card"} == names
    assert set(data["model_card"]) == set(MODEL_CARD_FIELDS)
    page = (DOCS / "own-model.rst").read_text(encoding="utf-8")
    for name in MODEL_CARD_FIELDS:
        assert f"``{name}``" in page


def test_config_example_states_non_defaults() -> None:
    """A value that differs from the default says so in its comment."""
    from reporter.config import AuditConfig

    defaults = AuditConfig().to_dict()
    lines = _full_config().code.splitlines()
    values = tomllib.loads(_full_config().code)
    for i, line in enumerate(lines):
        match = re.match(r"^(\w+) = ", line)
        if not match or match.group(1) not in defaults:
            continue
        key = match.group(1)
        comment = line.partition("#")[2]
        j = i + 1
        while j < len(lines) and re.match(r"^\s+#", lines[j]):
            comment += lines[j]
            j += 1
        if values[key] != defaults[key]:
            assert re.search(r"default|not set", comment, flags=re.I), (
                f"{key} = {values[key]!r} differs from the default {defaults[key]!r}; "
                "its comment should say what the default is"
            )


def test_config_examples_load(tmp_path: Path) -> None:
    from reporter.config import AuditConfig, load_config

    blocks = _blocks("toml")
    assert len(blocks) >= 2
    for n, block in enumerate(blocks):
        for variant, code in (("as-is", block.code), ("uncommented", _uncommented(block.code))):
            path = tmp_path / f"{n}-{variant}.toml"
            path.write_text(code, encoding="utf-8")
            config = load_config(path)
            assert isinstance(config, AuditConfig), f"{block.page}:{block.line}"
    full = load_config(_write(tmp_path / "full.toml", _full_config().code))
    assert full.model_card["name"] == "Pet classifier"
    assert "modelcard" in full.formats


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- templates


def test_template_example_overrides_known_blocks() -> None:
    base = (ROOT / "templates" / "base.html").read_text(encoding="utf-8")
    known = set(re.findall(r"{%-?\s*block\s+(\w+)", base))
    used = set(re.findall(r"{%-?\s*block\s+(\w+)", _template_example()))
    assert used and used <= known, f"not blocks of base.html: {sorted(used - known)}"
    page = (DOCS / "templates.rst").read_text(encoding="utf-8")
    for name in known:
        assert f"``{name}``" in page, f"block {name} of base.html is not documented"


def test_template_example_renders(workspace: Path) -> None:
    html = (workspace / "branded" / "report.html").read_text(encoding="utf-8")
    assert "Acme Corp · model risk review" in html
    assert "Sign-off" in html and 'id="appendix"' in html
    assert "Acme Corp, internal use only." in html


# --------------------------------------------------------------------------- API page


def test_api_page_targets_import() -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    targets = re.findall(r"^\.\. auto(?:function|class|exception|data|module):: (\S+)", text, re.M)
    assert len(targets) > 20
    for target in targets:
        parts = target.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            break
        else:  # pragma: no cover - only on a broken page
            pytest.fail(f"cannot import {target}")


# --------------------------------------------------------------------------- page images


def _render_script():
    spec = importlib.util.spec_from_file_location(
        "render_doc_pages", ROOT / "scripts" / "render_doc_pages.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_script_skips_missing_reports(tmp_path: Path, capsys) -> None:
    script = _render_script()
    manifest_before = script.MANIFEST.read_bytes() if script.MANIFEST.exists() else None
    assert script.main(["--reports", str(tmp_path / "none")]) == 0
    assert "no example reports" in capsys.readouterr().out
    after = script.MANIFEST.read_bytes() if script.MANIFEST.exists() else None
    assert after == manifest_before


def test_render_script_finds_section_pages() -> None:
    script = _render_script()
    pages = [
        "Model audit\nContents\n1. Performance ........ 3\n",
        "cover text",
        "gapnet · digits\nPerformance\nHow often the model is right",
        "Can the explanations be trusted?\nA saliency map",
    ]
    found = script.find_sections(pages)
    assert found == {"cover": 1, "performance": 3, "trust": 4}
