"""Errors of osreco.plugin, each carrying its HTTP status and the context needed to fix it.

Part of the one tree rooted at ``osreco.errors.OsrecoError`` (HTTP status, then exit code)::

    OsrecoError
    ├── ConfigError                  500 [2] a sidecar setting is missing or invalid (osreco.errors)
    └── PluginError                  500 [3] unless a subclass says otherwise
        ├── RequestError             400 [2] a request field is invalid (names the field)
        │   ├── PayloadTooLargeError 413 [2] the body is larger than the configured limit
        │   ├── URITooLongError      414 [2] the URL is longer than the app answers
        │   └── HeadersTooLargeError 431 [2] the headers are larger than the app answers
        ├── AuthError                401 [2] missing or unknown API key
        ├── NotFoundError            404 [2] an item or route does not exist
        ├── NotReadyError            503 [3] node, alias or bundle do not match (readiness)
        ├── OverloadedError          429 [3] + Retry-After: the fold-in queue is full (nothing stored)
        ├── NodeUnavailableError     503 [3] + Retry-After: the node is unreachable or timed out
        └── UpstreamError            502 [3] the node answered with an unexpected error

Degradations (encoder down, user store down, LLM parser down) are *not* errors: the
service records them in the response and the metrics and carries on.
"""

from __future__ import annotations

from osreco.errors import EXIT_ENV, EXIT_USAGE, ConfigError, OsrecoError

__all__ = ["AuthError", "ConfigError", "NodeUnavailableError", "NotFoundError", "NotReadyError",
           "OverloadedError", "PayloadTooLargeError", "PluginError", "RequestError", "UpstreamError"]


class PluginError(OsrecoError):
    """Root of osreco.plugin errors; ``status`` is the HTTP status the one handler sends
    (``to_dict`` is the body), ``exit_code`` what the command line exits with."""

    status: int = 500
    code: str = "internal_error"
    exit_code = EXIT_ENV

    def __init__(self, message: str, *, fix: str | None = None, **context: object):
        super().__init__(message, fix=fix, **{k: v for k, v in context.items() if v is not None})


class RequestError(PluginError):
    status = 400
    code = "invalid_request"
    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, field: str, fix: str | None = None):
        super().__init__(message, fix=fix, field=field)
        self.field = field


class PayloadTooLargeError(RequestError):
    status = 413
    code = "payload_too_large"


class URITooLongError(RequestError):
    status = 414
    code = "uri_too_long"


class HeadersTooLargeError(RequestError):
    status = 431
    code = "headers_too_large"


class AuthError(PluginError):
    status = 401
    code = "unauthorized"
    exit_code = EXIT_USAGE


class NotFoundError(PluginError):
    status = 404
    code = "not_found"
    exit_code = EXIT_USAGE


class NotReadyError(PluginError):
    status = 503
    code = "not_ready"


class NodeUnavailableError(PluginError):
    """The OpenSearch node is unreachable or did not answer in time; the client retries."""

    status = 503
    code = "node_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, fix: str | None = None,
                 **context: object):
        super().__init__(message, fix=fix, **context)
        self.retry_after_s = retry_after_s


class OverloadedError(PluginError):
    """The sidecar cannot take the work now (the fold-in queue is full); nothing was done."""

    status = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1, fix: str | None = None, **context: object):
        super().__init__(message, fix=fix, **context)
        self.retry_after_s = retry_after_s


class UpstreamError(PluginError):
    status = 502
    code = "upstream_error"
