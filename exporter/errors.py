"""Errors of osreco.exporter, each naming the file or option at fault and a fix.

Part of the one tree rooted at ``osreco.errors.OsrecoError`` (exit codes in brackets)::

    OsrecoError
    ├── ConfigError        [2] an export option or Encoder argument is invalid (osreco.errors)
    └── ExporterError      [1]
        ├── ModelDirError      [2] the model folder is missing, unsupported or lacks a tokenizer
        ├── BundleError        [2] a bundle is missing files, was tampered with, or is too new
        ├── ParityError        [1] the exported graph does not compute what PyTorch computed
        ├── RuntimeEnvError    [3] onnxruntime / a provider / an optional dependency is missing
        ├── ImageInputError    [2] an image is corrupt, truncated, too big, or not an image
        ├── AudioInputError    [2] audio is corrupt, of an unsupported codec, too long, or silent
        └── MLCommonsError     [1] the ml-commons zip or registration failed
"""

from __future__ import annotations

from pathlib import Path

from osreco.errors import EXIT_ENV, EXIT_FAILURES, EXIT_USAGE, ConfigError, OsrecoError

__all__ = ["AudioInputError", "BundleError", "ConfigError", "ExporterError", "ImageInputError", "MLCommonsError",
           "ModelDirError", "ParityError", "RuntimeEnvError"]


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


class ImageInputError(ExporterError):
    """An image cannot be used: not an image, corrupt, truncated, or over a size limit.

    ``problem`` is a short machine-readable reason (``not_an_image``, ``corrupt``, ``too_large``,
    ``too_many_pixels``, ``empty``); the message names the limit where one was hit.
    """

    exit_code = EXIT_USAGE
    status = 400
    code = "invalid_image"

    def __init__(self, message: str, problem: str, path: str | Path | None = None,
                 fix: str | None = None, **context: object):
        self.problem = problem
        if problem in ("too_large", "too_many_pixels"):
            self.status, self.code = 413, "image_too_large"
        super().__init__(message, path=path, fix=fix, problem=problem, **context)


class AudioInputError(ExporterError):
    """Audio cannot be transcribed: corrupt, an unsupported codec, over a size or duration cap, or silent.

    ``problem`` is a short machine-readable reason (``unsupported_codec``, ``corrupt``,
    ``too_large``, ``too_long``, ``no_speech``, ``empty``); the message names the limit where one
    was hit. A cap is a 413, silence a 422, anything else a 400 (415 for a codec).
    """

    exit_code = EXIT_USAGE
    status = 400
    code = "invalid_audio"
    _STATUS = {"too_large": (413, "audio_too_large"), "too_long": (413, "audio_too_long"),
               "no_speech": (422, "no_speech"), "unsupported_codec": (415, "unsupported_audio")}

    def __init__(self, message: str, problem: str, path: str | Path | None = None,
                 fix: str | None = None, **context: object):
        self.problem = problem
        if problem in self._STATUS:
            self.status, self.code = self._STATUS[problem]
        super().__init__(message, path=path, fix=fix, problem=problem, **context)
