"""Errors of osreco.exporter, each naming the file or option at fault and a fix.

    ExporterError
    ├── ConfigError        an export option or Encoder argument is invalid
    ├── ModelDirError      the model folder is missing, unsupported or lacks a tokenizer
    ├── BundleError        a bundle is missing files, was tampered with, or is too new
    ├── ParityError        the exported graph does not compute what PyTorch computed
    ├── RuntimeEnvError    onnxruntime / a provider / an optional dependency is missing
    └── MLCommonsError     the ml-commons zip or registration failed
"""

from __future__ import annotations

from pathlib import Path


class ExporterError(Exception):
    """Root of the exporter's errors.

    Args:
        message: what is wrong.
        path: the file or folder at fault, if any.
        fix: one line telling the user how to fix it.
    """

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        super().__init__(message)
        self.path = str(path) if path is not None else None
        self.fix = fix

    def __str__(self) -> str:
        text = super().__str__()
        if self.path and self.path not in text:
            text = f"{self.path}: {text}"
        return f"{text} — fix: {self.fix}" if self.fix else text


class ConfigError(ExporterError):
    """An export option or Encoder argument is invalid."""


class ModelDirError(ExporterError):
    """The model folder is missing, of an unsupported architecture, or has no tokenizer."""


class BundleError(ExporterError):
    """A bundle is incomplete, does not match its manifest, or has a newer format version."""


class ParityError(ExporterError):
    """The exported model's outputs are too far from PyTorch's; carries the measured numbers."""

    def __init__(self, message: str, parity: dict | None = None, path: str | Path | None = None,
                 fix: str | None = None):
        super().__init__(message, path=path, fix=fix)
        self.parity = dict(parity or {})


class RuntimeEnvError(ExporterError):
    """onnxruntime, a requested execution provider, or an export dependency is missing."""


class MLCommonsError(ExporterError):
    """Building the ml-commons zip or registering it with OpenSearch failed."""
