"""Errors of osreco.exporter, each naming the file or option at fault and a fix.

Part of the one tree rooted at ``osreco.errors.OsrecoError`` (exit codes in brackets)::

    OsrecoError
    ├── ConfigError        [2] an export option or Encoder argument is invalid (osreco.errors)
    └── ExporterError      [1]
        ├── ModelDirError      [2] the model folder is missing, unsupported or lacks a tokenizer
        ├── BundleError        [2] a bundle is missing files, was tampered with, or is too new
        ├── ParityError        [1] the exported graph does not compute what PyTorch computed
        ├── RuntimeEnvError    [3] onnxruntime / a provider / an optional dependency is missing
        └── MLCommonsError     [1] the ml-commons zip or registration failed
"""

from __future__ import annotations

from pathlib import Path

from osreco.errors import EXIT_ENV, EXIT_FAILURES, EXIT_USAGE, ConfigError, OsrecoError

__all__ = ["BundleError", "ConfigError", "ExporterError", "MLCommonsError", "ModelDirError",
           "ParityError", "RuntimeEnvError"]


class ExporterError(OsrecoError):
    """Root of the exporter's errors.

    Args:
        message: what is wrong.
        path: the file or folder at fault, if any (prefixed to the message).
        fix: one line telling the user how to fix it.
    """

    exit_code = EXIT_FAILURES

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None,
                 **context: object):
        self.path = str(path) if path is not None else None
        super().__init__(message, fix=fix, path=self.path, **context)


class ModelDirError(ExporterError):
    """The model folder is missing, of an unsupported architecture, or has no tokenizer."""

    exit_code = EXIT_USAGE


class BundleError(ExporterError):
    """A bundle is incomplete, does not match its manifest, or has a newer format version."""

    exit_code = EXIT_USAGE


class ParityError(ExporterError):
    """The exported model's outputs are too far from PyTorch's; carries the measured numbers."""

    def __init__(self, message: str, parity: dict | None = None, path: str | Path | None = None,
                 fix: str | None = None):
        super().__init__(message, path=path, fix=fix, parity=dict(parity or {}))
        self.parity = dict(parity or {})


class RuntimeEnvError(ExporterError):
    """onnxruntime, a requested execution provider, or an export dependency is missing."""

    exit_code = EXIT_ENV


class MLCommonsError(ExporterError):
    """Building the ml-commons zip or registering it with OpenSearch failed."""
