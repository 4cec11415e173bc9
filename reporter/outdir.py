"""The output folder (``--out``): locked, staged, and replaced as a whole in one atomic step.

A report is a bundle (``audit.json``, ``artifacts/``, ``report.html``, ...) whose files must
always belong to the same run. So a run never writes into ``--out``; it writes the complete
new bundle into a staging folder beside it and then swaps the two folders in one step::

    with staged_output(out) as stage:      # takes the lock, cleans what dead runs left
        (stage / "audit.json").write_text(...)
        ...                                # any exception here: --out is left untouched
    # here --out holds the new bundle (and the user's own files); the old one is deleted

How, on disk (``OUT`` is the folder's name, everything lives in its parent folder):

- ``.OUT.lock``: ``fcntl.flock`` taken for the whole ``with`` block (and by
  :func:`output_lock`, re-entrant within a thread). A second run waits ``wait`` seconds, then
  fails with a one-line :class:`~reporter.errors.ReporterError` naming the holder's pid. The
  file stays (removing a lock file races with the next run); it holds the last holder's pid.
- ``.OUT.partial-PID-XXXX``: the staging folder. On success it is exchanged with ``OUT`` by
  ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15, one atomic step: there is no moment at which
  ``OUT`` is missing or mixed) and then holds the old bundle, which is deleted. Where the
  exchange is not supported (other systems, some network file systems) two renames are used:
  ``OUT`` -> ``.OUT.old-PID-XXXX``, staging -> ``OUT``; a run killed between them leaves no
  ``OUT``, and the next run renames the ``.old-`` folder back before anything else.
- Staging and ``.old-`` folders of dead runs (kill -9, power loss) are removed by the next run,
  under the lock (only the lock holder ever creates them, so any found then are stale).
- Entries of ``OUT`` that are not part of a bundle (``owned``, default :data:`BUNDLE_NAMES`,
  plus every name the new bundle has) are the user's: they are hard-linked (copied where links
  fail) into the staging folder before the swap, and any that appeared meanwhile are moved over
  after it. A bundle name of the old report that the new run did not write (``report.pdf``
  after a ``--format json`` run) is removed with the old bundle: the folder never mixes runs.
- SIGINT, SIGTERM and SIGHUP that arrive during the swap are held until it is complete, so an
  interruption either leaves the old report or reports that the new one was written
  (:data:`PUBLISHED`).

``--out`` given as a symlink is followed (the real folder is replaced). A shell whose working
directory is ``--out`` keeps seeing the old, deleted folder until it changes directory again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import functools
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from reporter.errors import ReporterError

__all__ = [
    "BUNDLE_NAMES",
    "LOCK_WAIT_S",
    "PUBLISHED",
    "output_lock",
    "staged_output",
    "write_error",
]

log = logging.getLogger(__name__)

#: Top-level names a report bundle may have. In ``--out`` they belong to the previous report;
#: everything else there is the user's and survives a new run.
BUNDLE_NAMES: frozenset[str] = frozenset(
    {"audit.json", "audit.toml", "report.html", "report.pdf", "MODEL_CARD.md", "artifacts"}
)

#: Seconds a run waits for another run's lock on the same ``--out`` before it gives up.
LOCK_WAIT_S = 10.0

#: Output folders published by this process, in order (the CLI reads it to say truthfully
#: whether an interrupted run had already replaced its report).
PUBLISHED: list[Path] = []

_HELD: dict[tuple[str, int], int] = {}  # (real path of OUT, thread) -> re-entry count
_HELD_GUARD = threading.Lock()

_REASONS = {
    errno.ENOSPC: "no space left on device; free some space or choose another --out",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another --out",
    errno.EROFS: "read-only file system; choose an --out on a writable disk",
    errno.EACCES: "permission denied; choose an --out you can write to",
    errno.EPERM: "permission denied; choose an --out you can write to",
    errno.EBUSY: "it is a mount point or in use; give a folder inside it as --out",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another --out",
    errno.EEXIST: "a part of the path is a file, not a folder; choose another --out",
}


def _real(out: str | os.PathLike[str]) -> Path:
    real = Path(os.path.realpath(os.fspath(out)))
    if not real.name:
        raise ReporterError(f"--out {out} is the root folder; give a folder for the report.")
    return real


def write_error(out: str | os.PathLike[str], exc: OSError) -> ReporterError:
    """A one-line error for an ``OSError`` met while writing the bundle for ``out``."""
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc) or type(exc).__name__
    real = Path(os.path.realpath(os.fspath(out)))
    try:
        had_report = real.is_dir() and any(real.iterdir())
    except OSError:
        had_report = real.exists()
    kept = "the previous report was left unchanged" if had_report else "nothing was written"
    return ReporterError(f"Cannot write the report to {out}: {reason}; {kept}.")


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str], *, wait: float | None = None) -> Iterator[Path]:
    """Hold the lock on ``out`` (``.OUT.lock`` beside it); yield the real path of ``out``.

    Re-entrant within a thread (an audit may hold it for the whole run while
    :func:`staged_output` takes it again to publish); another thread of the same process waits
    like another process. Creates ``out``'s parent folders, and needs write permission in the
    parent (the lock file and the staging folder live there).

    Raises:
        ReporterError: ``out`` is a file, cannot be written, or another process kept the lock
            for ``wait`` seconds (default :data:`LOCK_WAIT_S`); the message names its pid.
    """
    real = _real(out)
    if real.exists() and not real.is_dir():
        raise ReporterError(f"--out {out} is a file; give a folder for the report.")
    key = (str(real), threading.get_ident())  # another thread waits like another process
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield real
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(real.parent / f".{real.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    except OSError as exc:
        raise write_error(out, exc) from exc
    try:
        deadline = time.monotonic() + (LOCK_WAIT_S if wait is None else wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ReporterError(
                        f"--out {out} is in use by another reporter run ({_lock_holder(fd)}); "
                        "wait for it to finish or choose another --out."
                    ) from None
                time.sleep(0.05)
        with contextlib.suppress(OSError):  # the pid is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with _HELD_GUARD:
            _HELD[key] = 1
        try:
            yield real
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
    finally:
        os.close(fd)  # releases the flock


def _leftovers(real: Path, kind: str) -> list[Path]:
    prefix = f".{real.name}.{kind}-"
    try:
        return sorted(p for p in real.parent.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def _recover(real: Path) -> None:
    """Under the lock: undo a half-done two-rename swap, then delete what dead runs left."""
    olds = _leftovers(real, "old")
    if not os.path.lexists(real) and olds:
        newest = max(olds, key=lambda p: p.lstat().st_mtime)
        os.rename(newest, real)
        log.warning("restored the previous report in %s (a run was stopped mid-swap)", real)
    for path in _leftovers(real, "partial") + _leftovers(real, "old"):
        log.info("removing %s, left by a run that was stopped", path.name)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP (Python-level) and deliver them when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> object | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing folders atomically; ``False`` where the system cannot."""
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:  # type: ignore[operator]
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(stage: Path, real: Path) -> Path:
    """Make ``stage`` the new ``real``; return the folder that now holds the old bundle."""
    if not os.path.lexists(real):
        os.rename(stage, real)
        return stage  # gone: nothing old to delete
    if exchange(stage, real):
        return stage
    old = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-{os.getpid()}-", dir=real.parent))
    os.rename(real, old)  # replaces the empty folder just made
    try:
        os.rename(stage, real)
    except BaseException:
        os.rename(old, real)
        raise
    return old


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst`` with hard links (copies where a link is refused)."""
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst, 0o700)
        for name in os.listdir(src):
            _link_tree(src / name, dst / name)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    else:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            if not stat.S_ISREG(st.st_mode):
                raise
            shutil.copy2(src, dst)


def _check_kinds(stage: Path, real: Path) -> None:
    for name in os.listdir(stage):
        target = real / name
        if os.path.lexists(target) and target.is_dir() != (stage / name).is_dir():
            raise ReporterError(
                f"Cannot replace {target}: it is a {'folder' if target.is_dir() else 'file'} "
                "where the report writes a "
                f"{'folder' if (stage / name).is_dir() else 'file'}. Move it away or choose "
                "another --out; the previous report was left unchanged."
            )


def _user_entries(real: Path, owned: Iterable[str]) -> list[str]:
    owned = set(owned)
    return [n for n in os.listdir(real) if n not in owned]


def _publish(stage: Path, real: Path, owned: frozenset[str]) -> Path | None:
    """Swap ``stage`` in as ``real``; return the folder holding the old bundle (or None)."""
    owned = owned | frozenset(os.listdir(stage))
    exists = real.is_dir()
    if exists:
        _check_kinds(stage, real)
        for name in _user_entries(real, owned):
            _link_tree(real / name, stage / name)
        os.chmod(stage, stat.S_IMODE(real.stat().st_mode))
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)
    with _signals_held():
        old = _swap(stage, real)
        PUBLISHED.append(real)
        if not exists:
            return None
        for name in _user_entries(old, owned):  # files the user added during the run
            if not os.path.lexists(real / name):
                try:
                    os.rename(old / name, real / name)
                except OSError as exc:
                    keep = real.parent / f"{real.name}.previous-{os.getpid()}"
                    os.rename(old, keep)
                    log.warning("could not move %s back into %s (%s); kept in %s",
                                name, real, exc, keep)  # fmt: skip
                    return None
    return old


@contextlib.contextmanager
def staged_output(
    out: str | os.PathLike[str],
    *,
    owned: Iterable[str] = BUNDLE_NAMES,
    wait: float | None = None,
) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit make it ``out`` in one atomic step.

    Write the complete bundle into the yielded folder (files and subfolders). When the block
    ends normally, the staging folder replaces ``out`` atomically (see the module docs); the
    user's own entries of ``out`` (names not in ``owned`` and not written by this run) are
    carried over. When the block raises anything (an error, KeyboardInterrupt, SIGTERM via the
    CLI's handler), ``out`` is left exactly as it was and the staging folder is removed. The
    lock on ``out`` is held throughout; stale staging folders of dead runs are removed first.

    Args:
        out: The output folder (created if missing, with its parents).
        owned: Top-level names that belong to a report bundle (default :data:`BUNDLE_NAMES`).
        wait: Seconds to wait for another run's lock (default :data:`LOCK_WAIT_S`).

    Raises:
        ReporterError: ``out`` is a file or in use; writing failed (full disk, read-only file
            system, permission denied: an ``OSError`` raised in the block is turned into a
            one-line message that says the previous report was left unchanged); or an entry
            of ``out`` has a bundle name but the other kind (a folder named ``audit.json``).
    """
    with output_lock(out, wait=wait) as real:
        try:
            _recover(real)
            stage = Path(tempfile.mkdtemp(prefix=f".{real.name}.partial-{os.getpid()}-",
                                          dir=real.parent))  # fmt: skip
        except OSError as exc:
            raise write_error(out, exc) from exc
        old: Path | None = None
        try:
            try:
                yield stage
                old = _publish(stage, real, frozenset(owned))
            except OSError as exc:
                raise write_error(out, exc) from exc
        finally:
            for path in (stage, old):
                if path is not None and path != real:
                    shutil.rmtree(path, ignore_errors=True)
