"""Errors of osreco.ingest, each carrying the context needed to fix it.

Part of the one tree rooted at ``osreco.errors.OsrecoError`` (exit codes in brackets)::

    OsrecoError
    ├── ConfigError          [2] a setting is missing or invalid (names it; 3 for OPENSEARCH_*)
    └── IngestError          [3]
        ├── CatalogError     [2] a catalog file cannot be read at all (names the file)
        │   └── RowError     [2] one row is invalid (names line and field); it is dead-lettered
        ├── IndexError_      [2] the index is missing or does not match the bundle
        └── BulkError        [3] OpenSearch refused a write after retries (names the item)
"""

from __future__ import annotations

from collections.abc import Mapping

from osreco.errors import EXIT_ENV, EXIT_USAGE, ConfigError, OsrecoError

__all__ = ["BulkError", "CatalogError", "ConfigError", "IndexError_", "IngestError", "RowError"]


class IngestError(OsrecoError):
    """Root of osreco.ingest errors; a bare one is the environment's (node, files)."""

    exit_code = EXIT_ENV


class CatalogError(IngestError):
    """A catalog file cannot be read at all."""

    exit_code = EXIT_USAGE


class RowError(CatalogError):
    """One catalog row is invalid; the writer dead-letters it and carries on."""

    def __init__(self, message: str, *, line: int, field: str | None = None, fix: str | None = None,
                 row: Mapping[str, object] | None = None):
        """``row``: the parsed row when there is one (a caller can still tell which item it names)."""
        super().__init__(message, fix=fix, line=line, field=field)
        self.line = line
        self.field = field
        self.row = row


class IndexError_(IngestError):
    """The index is missing or was built for another bundle."""

    exit_code = EXIT_USAGE


class BulkError(IngestError):
    """OpenSearch refused a write after every retry."""
