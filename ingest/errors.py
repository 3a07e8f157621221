"""Errors of osreco.ingest, each carrying the context needed to fix it.

    IngestError
    ├── ConfigError          a setting is missing or invalid (names the setting)
    ├── CatalogError         a catalog file cannot be read at all (names the file)
    │   └── RowError         one row is invalid (names line and field); it is dead-lettered
    ├── IndexError_          the index is missing or does not match the bundle
    ├── BulkError            OpenSearch refused a write after retries (names the item)
    └── InteractionError     interactions for collaborative filtering are unusable
"""

from __future__ import annotations


class IngestError(Exception):
    """Root of osreco.ingest errors."""

    def __init__(self, message: str, *, fix: str | None = None, **context: object):
        super().__init__(message)
        self.fix = fix
        self.context = context

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} — fix: {self.fix}" if self.fix else base


class ConfigError(IngestError):
    def __init__(self, message: str, *, field: str, fix: str | None = None):
        super().__init__(message, fix=fix, field=field)
        self.field = field


class CatalogError(IngestError):
    pass


class RowError(CatalogError):
    def __init__(self, message: str, *, line: int, field: str | None = None, fix: str | None = None):
        super().__init__(message, fix=fix, line=line, field=field)
        self.line = line
        self.field = field


class IndexError_(IngestError):
    pass


class BulkError(IngestError):
    pass


class InteractionError(IngestError):
    pass
