"""Progress on stderr: tqdm bars on a terminal, one line per stage otherwise.

When stderr is not a terminal (a CI log, a file, a pipe), carriage-return frames would be
noise: each stage then writes one line when it ends (``reporter: explain: 8 batches in 3.1 s``).
``--quiet`` silences both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

__all__ = ["interactive", "progress_bar", "stage_line", "step_progress"]

T = TypeVar("T")


def interactive() -> bool:
    """True when stderr is a terminal (bars redraw in place there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def stage_line(message: str) -> None:
    """One line on stderr, printed above any bar that is running."""
    tqdm.write(f"reporter: {message}", file=sys.stderr)


def progress_bar(
    iterable: Iterable[T], *, desc: str, enabled: bool = True, total: int | None = None, **kw
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when ``enabled`` (a terminal), or write one
    line when it is done (not a terminal)."""
    if not enabled:
        yield from iterable
        return
    if not interactive():
        unit = kw.get("unit", "it")
        start, count = time.perf_counter(), 0
        for item in iterable:
            count += 1
            yield item
        plural = "" if count == 1 or unit.endswith("s") else "es" if unit.endswith("ch") else "s"
        stage_line(f"{desc}: {count} {unit}{plural} in {time.perf_counter() - start:.1f} s")
        return
    with tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw) as bar:
        yield from bar


@contextmanager
def step_progress(
    desc: str, *, total: int, enabled: bool = True, unit: str = "step"
) -> Iterator[Callable[..., None]]:
    """A callback that advances a bar by one per call (``render(progress=...)`` style), for a
    stage that is not a loop over an iterable. Off a terminal: one line when it ends."""
    if not enabled:
        yield lambda *_: None
        return
    if not interactive():
        count = [0]
        start = time.perf_counter()

        def tick(*_: object) -> None:
            count[0] += 1

        yield tick
        stage_line(f"{desc}: {count[0]} {unit}s in {time.perf_counter() - start:.1f} s")
        return
    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield lambda *_: bar.update(1)
