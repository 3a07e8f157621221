"""Errors of osreco.learning (a subtree of :class:`osreco.errors.OsrecoError`).

    LearnError   2   bad learn input or state (a bad --every, a missing history, a corrupt state file)
"""

from __future__ import annotations

from osreco.errors import EXIT_USAGE, OsrecoError

__all__ = ["LearnError"]


class LearnError(OsrecoError):
    """Bad input or state of ``osreco learn``; exit 2."""

    exit_code = EXIT_USAGE
