"""Temporary minimal output staging (replaced by the hardening branch's outdir at merge)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reporter.errors import ReporterError

__all__ = ["staged_output"]


@contextmanager
def staged_output(out: str | os.PathLike[str]) -> Iterator[Path]:
    out = Path(out)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as exc:
        raise ReporterError(f"Cannot write the report to {out}: {exc.strerror or exc}.") from exc
    try:
        yield stage
        try:
            out.mkdir(parents=True, exist_ok=True)
            for entry in stage.iterdir():
                target = out / entry.name
                if target.exists() and target.is_dir() != entry.is_dir():
                    raise ReporterError(
                        f"Cannot replace {target}: a file and a folder have the same name. Move "
                        "it away or choose another --out; the previous report was left as it was."
                    )
            for entry in stage.iterdir():
                target = out / entry.name
                if target.is_dir() and entry.is_dir():
                    shutil.rmtree(target)
                os.replace(entry, target)
        except OSError as exc:
            raise ReporterError(
                f"Cannot write the report to {out}: {exc.strerror or exc}."
            ) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
