"""Progress bars (tqdm on stderr), silenced by ``--quiet`` or when disabled."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress_bar"]

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T], *, desc: str, enabled: bool = True, total: int | None = None, **kw
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when ``enabled``."""
    if not enabled:
        yield from iterable
        return
    with tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw) as bar:
        yield from bar
