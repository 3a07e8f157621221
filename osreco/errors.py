"""The one error tree of osreco, and the exit codes of the ``osreco`` command line.

Every error names what is wrong and, where it can, one line telling how to fix it
(``str(e)`` is ``"message — fix: ..."``). Each carries ``exit_code``, which the one CLI
handler (``osreco.cli_errors``) exits with:

    EXIT_OK 0        the job ran and reported no failures
    EXIT_FAILURES 1  the job ran but reported failures (dead letters, a refused model)
    EXIT_USAGE 2     bad usage or input
    EXIT_ENV 3       environment: node, Java, Maven, model files, a missing dependency

The tree (each part's ``errors.py`` draws its own subtree)::

    OsrecoError                  1   root; carries ``fix``, ``exit_code`` and context
    ├── ConfigError              2   a setting or option is invalid (names it); 3 for OPENSEARCH_*
    ├── NodeError                3   the local OpenSearch node cannot be fetched, started or reached
    ├── ExporterError            1   osreco.exporter (exporter/errors.py)
    ├── TrainingError            2   osreco.training: bad events or catalog files (osreco/training/errors.py)
    ├── IngestError              3   osreco.ingest (ingest/errors.py)
    ├── InteractionError         2   osreco.cf (osreco/cf/errors.py)
    └── PluginError              3   osreco.plugin, with an HTTP status (plugin/errors.py)
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_ENV = 0, 1, 2, 3


class OsrecoError(Exception):
    """Root of every osreco error.

    Args:
        message: what is wrong.
        fix: one line telling the user how to fix it.
        **context: what the error is about (a path, a line, a field, an item id), for reports.

    ``exit_code`` is the command line's exit status for this kind of error; ``status`` and
    ``code`` are how the sidecar's one HTTP handler reports it (``to_dict``).
    """

    exit_code: int = EXIT_FAILURES
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, fix: str | None = None, **context: object):
        super().__init__(message)
        self.fix = fix
        self.context = context

    @property
    def message(self) -> str:
        """The message without the fix; prefixed with the ``path`` at fault unless it names it."""
        text = super().__str__()
        path = self.context.get("path")
        return f"{path}: {text}" if path and str(path) not in text else text

    def __str__(self) -> str:
        return f"{self.message} — fix: {self.fix}" if self.fix else self.message

    def to_dict(self) -> dict[str, object]:
        """The JSON error body: ``{"error": {code, message, fix?, **context}}``."""
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.fix:
            body["fix"] = self.fix
        body.update({k: v for k, v in self.context.items() if v is not None})
        return {"error": body}


class ConfigError(OsrecoError):
    """A setting, option or argument is missing or invalid.

    Args:
        message: what is wrong.
        path: the file or folder at fault, if any (prefixed to the message).
        fix: one line telling the user how to fix it.
        field: the setting, option or field at fault.

    A setting of the OpenSearch connection (``OPENSEARCH_*``) is the environment's, so it
    exits 3; every other one is bad usage (2).
    """

    exit_code = EXIT_USAGE
    code = "config_error"

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None, *,
                 field: str | None = None, **context: object):
        self.path = str(path) if path is not None else None
        super().__init__(message, fix=fix, field=field, path=self.path, **context)
        self.field = field
        if field and field.startswith("OPENSEARCH_"):
            self.exit_code = EXIT_ENV


class NodeError(OsrecoError):
    """The local OpenSearch node could not be fetched, installed, started or stopped."""

    exit_code = EXIT_ENV

    def __init__(self, message: str, fix: str | None = None, log_tail: str = ""):
        super().__init__(message, fix=fix)
        self.log_tail = log_tail
