"""User-facing errors.

Anything a user can cause (a missing path, a bad checkpoint, an unknown layer) is raised as a
:class:`ReporterError` with a message that says what is wrong and what to do. The command line
prints the message without a traceback and exits with status 2.
"""

from __future__ import annotations

__all__ = ["ReporterError"]


class ReporterError(Exception):
    """An error caused by the user's input, with a message meant to be read by them."""
