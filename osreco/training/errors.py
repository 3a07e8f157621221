"""Errors of osreco.training (a subtree of :class:`osreco.errors.OsrecoError`).

    TrainingError           2   bad training input
    └── TrainingDataError   2   an events or catalog file is missing or has a bad line (names the line)

Errors of the models and bundles training reads or writes are the exporter's
(``osreco.exporter.errors``: ``ModelDirError``, ``RuntimeEnvError``, ...).
"""

from __future__ import annotations

from pathlib import Path

from osreco.errors import EXIT_USAGE, OsrecoError


class TrainingError(OsrecoError):
    """Root of the training errors; bad input, so exit 2."""

    exit_code = EXIT_USAGE


class TrainingDataError(TrainingError):
    """An events or catalog file is missing or has a bad line; names the file and the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 fix: str | None = None):
        where = f"{path}:{line}" if path is not None and line is not None else path
        super().__init__(message, path=where, fix=fix)
        self.line = line
