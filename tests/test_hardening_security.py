"""Issue 13, security and "nothing lost, nothing mixed": sandboxed templates, typed config,
one atomic swap of the whole bundle, a lock on --out, cleanup after dead runs, full disks,
and signals that no handler swallows.

Everything goes through the real CLI (click's ``CliRunner`` in-process, or ``python -m
reporter`` / a ``python -c`` wrapper as a subprocess for kill -9, SIGTERM and SIGHUP); the
output-folder API (:mod:`reporter.outdir`) also has direct tests for its recovery paths.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from reporter.cli import cli
from tests.conftest import make_image_folder
from tests.test_bad_inputs import (
    LEAN,
    PREVIOUS,
    assert_ok,
    assert_previous_intact,
    assert_user_error,
    audit,
    seed_previous,
)

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--max-images", "10", *LEAN]


def _run_html(tmp_path: Path, model: Path, tdir: Path) -> tuple[object, Path]:
    out = tmp_path / "out"
    result = audit("--model", str(model), "--out", str(out), "--template-dir", str(tdir),
                   "--format", "html", *FAST)  # fmt: skip
    return result, out


# ------------------------------------------------------------------------------ templates

MARKER = "pwned-marker"
ESCAPES = {
    "cycler-popen": "{{ cycler.__init__.__globals__.os.popen('touch MARK; id').read() }}",
    "lipsum-open": "{{ lipsum.__globals__['__builtins__']['open']('/etc/hostname').read() }}",
    "lipsum-os": "{{ lipsum.__globals__.os.popen('touch MARK; id').read() }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "template-reference": "{{ self._TemplateReference__context }}",
    "attr-filter": "{{ (''|attr('__class__')).__mro__ }}",
    "format-string": "{{ '{0.__class__.__mro__}'.format(1) }}",
    "flask-config": "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
    "flask-request": "{{ request.application.__globals__.__builtins__ }}",
    "mutate-context": "{% set _ = audit.update({'metrics': 1}) %}{{ audit.metrics }}",
    "huge-string": "{{ 'x' * 1000000000 }}",
}


# through the real CLI: the two that run a command or read a file (report.css below)
THROUGH_CLI = ["cycler-popen", "lipsum-open"]


@pytest.mark.parametrize("name", THROUGH_CLI)
def test_template_escape_is_a_one_line_error(
    tmp_path: Path, digits_checkpoint: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "report.html").write_text(ESCAPES[name].replace("MARK", MARKER), encoding="utf-8")
    result, out = _run_html(tmp_path, digits_checkpoint, tdir)
    message = assert_user_error(result, "template")
    assert "\n" not in message.strip()
    assert "uid=" not in result.output
    assert not (tmp_path / MARKER).exists()  # the command never ran
    assert not out.exists()


@pytest.mark.parametrize("name", [n for n in ESCAPES if n not in THROUGH_CLI])
def test_template_escape_refused_by_the_renderer(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same sandbox, the other escapes: render_html is what the CLI runs for them."""
    from reporter.errors import ReporterError
    from reporter.report.render import render_html

    monkeypatch.chdir(tmp_path)
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "report.html").write_text(ESCAPES[name].replace("MARK", MARKER), encoding="utf-8")
    audit_ctx = {"metrics": {"accuracy": 0.5}, "model": {"arch": "x"}}
    with pytest.raises(ReporterError, match="template") as info:
        render_html(audit_ctx, {}, tdir)
    assert "\n" not in str(info.value)
    assert audit_ctx["metrics"] == {"accuracy": 0.5}
    assert not (tmp_path / MARKER).exists()


def test_template_escape_in_report_css(
    tmp_path: Path, digits_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "report.css").write_text(
        "body { color: red; }\n/* {{ cycler.__init__.__globals__.os.popen('touch "
        + MARKER
        + "').read() }} */\n",
        encoding="utf-8",
    )
    result, _ = _run_html(tmp_path, digits_checkpoint, tdir)
    assert_user_error(result, "sandbox")
    assert not (tmp_path / MARKER).exists()


def test_sandboxed_template_shows_values_escaped(tmp_path: Path, digits_checkpoint: Path) -> None:
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "report.html").write_text(
        "<p>{{ audit.model.arch }} {{ audit.metrics.accuracy | pct }} {{ '<script>x' }}</p>"
        "<style>{{ css }}</style>",
        encoding="utf-8",
    )
    result, out = _run_html(tmp_path, digits_checkpoint, tdir)
    assert_ok(result)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<p>gapnet " in html and "&lt;script&gt;x" in html and "<script>x" not in html


def test_template_runtime_error_is_one_line(tmp_path: Path, digits_checkpoint: Path) -> None:
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "report.html").write_text("{{ 1 / 0 }}", encoding="utf-8")
    result, _ = _run_html(tmp_path, digits_checkpoint, tdir)
    assert_user_error(result, "ZeroDivisionError")


# --------------------------------------------------------------------------------- config


def _config_audit(tmp_path: Path, text: str, *args: str):
    config = tmp_path / "audit.toml"
    config.write_text(text, encoding="utf-8")
    return audit("--config", str(config), "--out", str(tmp_path / "out"), *args)


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ('trust_checkpoint = "false"', ["trust_checkpoint", '"false"', "a boolean"]),
        ('quiet = "no"', ["quiet", '"no"', "a boolean"]),
        ("methods = 5", ["methods", "5", "a list of strings"]),
        ("methods = [5]", ["methods", "[5]", "a list of strings"]),
        ('max_images = "10"', ["max_images", '"10"', "an integer"]),
        ("max_images = true", ["max_images", "true", "an integer"]),
        ("device = 0", ["device", "0", "a string"]),
        ("seed = 9223372036854775808", ["seed", "out of range"]),
        ("seed = -1", ["seed", "out of range"]),
        ("lr = nan", ["lr", "not a finite number"]),
        ("lr = inf", ["lr", "not a finite number"]),
        ("lr = 0", ["lr", "above 0"]),
        ("spurious = 2", ["spurious", "between 0"]),
        ("epochs = 1.5", ["epochs", "1.5", "an integer"]),
        ("formats = {html = true}", ["formats", "a table"]),
        ("[model_card]\nowners = 3", ["model_card.owners", "a string or a list"]),
        ("seed = 1\n[audit]\nseed = 2", ["'seed'", "both at the top level and in [audit]"]),
    ],
)
def test_config_value_of_the_wrong_type_is_one_line(
    tmp_path: Path, toml: str, fragments: list[str]
) -> None:
    result = _config_audit(tmp_path, toml + "\n")
    message = assert_user_error(result, *fragments)
    assert "\n" not in message.strip()
    assert not (tmp_path / "out").exists()


def test_config_lists_accept_a_comma_string_and_floats_an_int(tmp_path: Path) -> None:
    from reporter.config import AuditConfig, load_config

    path = tmp_path / "audit.toml"
    path.write_text('methods = "gradcam, eigencam"\nlr = 1\n[audit]\nseed = 3\n')
    config = load_config(path)
    assert config.methods == ("gradcam", "eigencam")
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.seed == 3
    assert AuditConfig(out=Path("x")).out == "x"  # the Python API may pass a Path


class _Evil:
    """Unpickling this runs code (touches a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_trust_checkpoint_as_string_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    ckpt = tmp_path / "model.pt"
    torch.save({"model": _Evil(marker)}, ckpt, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    text = f'model = "{ckpt}"\ntrust_checkpoint = "false"\n'
    result = _config_audit(tmp_path, text, *FAST)
    assert_user_error(result, "trust_checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--seed", str(2**63)], "seed"),
        (["--seed", "-1"], "seed"),
        (["--lr", "nan"], "lr"),
        (["--lr", "inf"], "lr"),
        (["--lr", "-0.1"], "lr"),
    ],
)
def test_seed_and_lr_flags_are_checked(tmp_path: Path, args: list[str], fragment: str) -> None:
    out = tmp_path / "out"
    assert_user_error(audit("--out", str(out), *args), fragment)
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "m.pt"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert fragment in result.output


# ----------------------------------------------------------------------- the output folder


def _json_audit(model: Path, out: Path, *extra: str):
    return audit("--model", str(model), "--out", str(out), "--format", "json", *FAST, *extra)


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        (errno.ENOSPC, "no space left on device; free some space"),
        (errno.EROFS, "read-only file system; choose an --out on a writable disk"),
        (errno.EACCES, "permission denied; choose an --out you can write to"),
    ],
    ids=["ENOSPC", "EROFS", "EACCES"],
)
def test_write_failure_is_one_line_and_keeps_the_old_report(
    tmp_path: Path,
    digits_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    fragment: str,
) -> None:
    import reporter.report.writer as writer

    out = tmp_path / "out"
    seed_previous(out)

    def full(*_a, **_k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writer, "to_json", full)
    result = _json_audit(digits_checkpoint, out)
    assert_user_error(result, "Cannot write the report", fragment, "previous report was left")
    assert_previous_intact(out)


def test_full_disk_while_swapping_keeps_the_old_report(
    tmp_path: Path, digits_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reporter.outdir as outdir

    out = tmp_path / "out"
    seed_previous(out)
    (out / "notes.txt").write_text("mine\n")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outdir, "_link_tree", full)  # carrying the user's file over fails
    result = _json_audit(digits_checkpoint, out)
    assert_user_error(result, "no space left on device")
    assert (out / "notes.txt").read_text() == "mine\n"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_cache_that_cannot_be_written_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reporter.setup as setup

    def full(*_a, **_k):  # torch.save reports a full disk as a RuntimeError
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(setup, "save_checkpoint", full)
    data = make_image_folder(tmp_path / "data", {"cat": 8, "dog": 8})  # trains in a blink
    out = tmp_path / "out"
    cache = str(tmp_path / "cache")
    result = audit("--data", str(data), "--epochs", "1", "--input-size", "16", "--cache-dir",
                   cache, "--out", str(out), "--format", "json", *LEAN)  # fmt: skip
    assert_ok(result)
    assert "could not cache the trained model" in result.output
    assert (out / "audit.json").is_file()


def test_new_bundle_replaces_the_old_one_whole_and_keeps_user_files(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    seed_previous(out)
    (out / "notes.txt").write_text("mine\n")
    (out / "drafts").mkdir()
    (out / "drafts" / "a.md").write_text("draft\n")
    (out / "link").symlink_to("notes.txt")
    (out / "artifacts").mkdir()  # the previous run's artifacts belong to the previous report
    (out / "artifacts" / "old.npy").write_bytes(b"old")
    mode = 0o751
    out.chmod(mode)
    assert_ok(_json_audit(digits_checkpoint, out))
    names = {p.name for p in out.iterdir()}
    # the previous report's report.html / report.pdf are gone with it: nothing mixed
    assert names == {"audit.json", "artifacts", "audit.toml", "notes.txt", "drafts", "link"}
    assert json.loads((out / "audit.json").read_text())["metrics"]["n_images"] == 10
    assert (out / "drafts" / "a.md").read_text() == "draft\n"
    assert os.readlink(out / "link") == "notes.txt"
    assert (out.stat().st_mode & 0o777) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_a_folder_where_a_report_file_goes_is_refused(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    seed_previous(out)
    (out / "audit.json").unlink()
    (out / "audit.json").mkdir()
    (out / "audit.json" / "keep").write_text("x")
    result = _json_audit(digits_checkpoint, out)
    assert_user_error(result, "Cannot replace", "previous report was left unchanged")
    assert (out / "audit.json" / "keep").read_text() == "x"


def test_stale_staging_folders_of_dead_runs_are_removed(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    out = tmp_path / "out"
    seed_previous(out)
    stale = [tmp_path / f".out.partial-{pid}-abc", tmp_path / f".out.old-{pid}-def"]
    for folder in stale:
        folder.mkdir()
        (folder / "audit.json").write_text("{}")
    other = tmp_path / ".other.partial-1-x"  # another --out's: not ours to touch
    other.mkdir()
    assert_ok(_json_audit(digits_checkpoint, out))
    assert not any(p.exists() for p in stale)
    assert other.is_dir()


def test_second_run_waits_then_names_the_lock_holder(
    tmp_path: Path, digits_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reporter.outdir as outdir

    monkeypatch.setattr(outdir, "LOCK_WAIT_S", 0.3)
    out = tmp_path / "out"
    seed_previous(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            fd = os.open({str(tmp_path / ".out.lock")!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, str(os.getpid()).encode())
            print("held", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        result = _json_audit(digits_checkpoint, out)
        assert time.monotonic() - start < 10  # refused before any work
        assert_user_error(result, "in use by another reporter run", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert_previous_intact(out)
    assert_ok(_json_audit(digits_checkpoint, out))  # the lock died with its holder


# ------------------------------------------------------------ the output-folder API itself


def test_staged_output_exception_leaves_out_untouched(tmp_path: Path) -> None:
    from reporter.outdir import staged_output

    out = tmp_path / "out"
    seed_previous(out)
    with pytest.raises(KeyboardInterrupt), staged_output(out) as stage:
        (stage / "audit.json").write_text("new")
        (stage / "artifacts").mkdir()
        raise KeyboardInterrupt
    assert_previous_intact(out)


def test_staged_output_two_rename_fallback_and_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reporter.outdir as outdir

    out = tmp_path / "out"
    seed_previous(out)
    monkeypatch.setattr(outdir, "exchange", lambda a, b: False)  # no RENAME_EXCHANGE here
    with outdir.staged_output(out) as stage:
        (stage / "audit.json").write_text("new")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"audit.json": "new"}

    # a run killed between the two renames: OUT is gone, the old bundle is in .out.old-*
    os.rename(out, tmp_path / ".out.old-999999-x")
    with pytest.raises(RuntimeError), outdir.staged_output(out):
        raise RuntimeError("this run fails too")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"audit.json": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_staged_output_is_one_atomic_exchange(tmp_path: Path) -> None:
    from reporter.outdir import exchange, staged_output

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    if not exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    assert (b / "x").read_text() == "a" and not (a / "x").exists()
    out = tmp_path / "out"
    with staged_output(out) as stage:  # first run: OUT did not exist
        (stage / "audit.json").write_text("1")
    assert (out / "audit.json").read_text() == "1"


def test_output_lock_is_reentrant(tmp_path: Path) -> None:
    from reporter.outdir import output_lock, staged_output

    out = tmp_path / "out"
    with output_lock(out, wait=0), staged_output(out, wait=0) as stage:
        (stage / "audit.json").write_text("1")
    assert (out / "audit.json").read_text() == "1"
    assert (tmp_path / ".out.lock").read_text().strip() == str(os.getpid())


# ------------------------------------------------------------------------------- signals


def test_sigterm_in_the_models_dry_run_is_not_a_bad_model(
    digits_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_forward = torch.nn.Conv2d.forward

    def forward(self, x):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler raises here
        return real_forward(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", forward)
    result = CliRunner().invoke(cli, ["layers", str(digits_checkpoint)])
    assert result.exit_code == 143, (result.exit_code, result.output)
    assert "dry run" not in result.output
    assert "Terminated: stopped." in result.output


WRAPPER = """
import sys, time
import reporter.{module} as m
real = m.{name}
def slow(*args, **kwargs):
    print("SLOW", file=sys.stderr, flush=True)
    time.sleep({sleep})
    return real(*args, **kwargs)
m.{name} = slow
from reporter.cli import main
sys.argv = ["reporter", *sys.argv[1:]]
main()
"""


def _start(tmp_path: Path, module: str, name: str, sleep: float, args: list[str]):
    code = WRAPPER.format(module=module, name=name, sleep=sleep)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, "audit", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    chunks: list[str] = []
    slow = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        while data := os.read(proc.stderr.fileno(), 4096):
            chunks.append(data.decode("utf-8", "replace"))
            if "SLOW" in "".join(chunks):
                slow.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return proc, chunks, slow, reader


def _signal_at_slow_point(tmp_path, ckpt, module, name, sig, sleep=30.0) -> tuple[int, str]:
    out = tmp_path / "out"
    args = ["--model", str(ckpt), "--out", str(out), "--format", "json,html", *FAST]
    proc, chunks, slow, reader = _start(tmp_path, module, name, sleep, args)
    try:
        assert slow.wait(90), "".join(chunks)[-2000:]
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()
    return proc.returncode, "".join(chunks)


KILLED_IN_SWAP = """
import sys, time
import reporter.outdir as outdir
def slow(a, b):
    print("SLOW", flush=True)
    time.sleep(60)
outdir.exchange = slow
with outdir.staged_output(sys.argv[1]) as stage:
    (stage / "audit.json").write_text("{}")
    (stage / "report.html").write_text("new")
"""


def test_kill_9_in_the_swap_leaves_the_old_report_and_the_next_run_cleans_up(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    seed_previous(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the whole new bundle is staged beside --out when the process dies
    proc = subprocess.Popen([sys.executable, "-c", KILLED_IN_SWAP, str(out)], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "SLOW"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == PREVIOUS
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # left by the dead run
    assert_ok(_json_audit(digits_checkpoint, out))  # the next run, through the CLI
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert {p.name for p in out.iterdir()} == {"audit.json", "artifacts", "audit.toml"}


def test_sighup_while_writing_keeps_the_old_report(tmp_path: Path, digits_checkpoint: Path) -> None:
    """SIGHUP as SIGTERM (143, "Terminated", is covered at other stages in
    test_bad_inputs_runs)."""
    sig, code, word = signal.SIGHUP, 129, "Hung up"
    out = tmp_path / "out"
    seed_previous(out)
    # report.html is already staged when the signal arrives: it must never reach --out
    rc, stderr = _signal_at_slow_point(tmp_path, digits_checkpoint, "report.writer", "to_json", sig)
    assert rc == code, stderr[-2000:]
    assert f"{word}: stopped; the previous report was left unchanged." in stderr
    assert "Traceback" not in stderr
    assert_previous_intact(out)


def test_sigterm_during_the_swap_finishes_it_and_says_so(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    seed_previous(out)
    rc, stderr = _signal_at_slow_point(
        tmp_path, digits_checkpoint, "outdir", "exchange", signal.SIGTERM, sleep=2.0
    )
    assert rc == 143, stderr[-2000:]
    assert f"Terminated: stopped after the new report was written to {out}." in stderr
    assert {p.name for p in out.iterdir()} == {
        "audit.json",
        "artifacts",
        "audit.toml",
        "report.html",
    }
    assert json.loads((out / "audit.json").read_text())["metrics"]["n_images"] == 10
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
