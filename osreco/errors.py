"""Errors of the top-level tooling (local node, CLI).

    OsrecoError
    └── NodeError            the local OpenSearch node cannot be fetched, started or reached
"""

from __future__ import annotations


class OsrecoError(Exception):
    """Root of errors raised by the ``osreco`` tooling; carries a one-line fix."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} — fix: {self.fix}" if self.fix else base


class NodeError(OsrecoError):
    """The local OpenSearch node could not be fetched, installed, started or stopped."""

    def __init__(self, message: str, fix: str | None = None, log_tail: str = ""):
        super().__init__(message, fix)
        self.log_tail = log_tail
