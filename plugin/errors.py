"""Errors of osreco.plugin, each carrying its HTTP status and the context needed to fix it.

    PluginError                      500 unless a subclass says otherwise
    ├── ConfigError                  a sidecar setting is missing or invalid (names the setting)
    ├── RequestError                 400: a request field is invalid (names the field)
    │   └── PayloadTooLargeError     413: the body is larger than the configured limit
    ├── AuthError                    401: missing or unknown API key
    ├── NotFoundError                404: an item or route does not exist
    ├── NotReadyError                503: node, alias or bundle do not match (readiness)
    ├── NodeUnavailableError         503 + Retry-After: the node is unreachable or timed out
    └── UpstreamError                502: the node answered with an unexpected error

Degradations (encoder down, user store down, LLM parser down) are *not* errors: the
service records them in the response and the metrics and carries on.
"""

from __future__ import annotations


class PluginError(Exception):
    """Root of osreco.plugin errors; ``status`` is the HTTP status the one handler sends."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, fix: str | None = None, **context: object):
        super().__init__(message)
        self.fix = fix
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} — fix: {self.fix}" if self.fix else base

    def to_dict(self) -> dict[str, object]:
        """The JSON error body: ``{"error": {code, message, fix?, **context}}``."""
        body: dict[str, object] = {"code": self.code, "message": super().__str__()}
        if self.fix:
            body["fix"] = self.fix
        body.update(self.context)
        return {"error": body}


class ConfigError(PluginError):
    code = "config_error"

    def __init__(self, message: str, *, field: str, fix: str | None = None):
        super().__init__(message, fix=fix, field=field)
        self.field = field


class RequestError(PluginError):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, field: str, fix: str | None = None):
        super().__init__(message, fix=fix, field=field)
        self.field = field


class PayloadTooLargeError(RequestError):
    status = 413
    code = "payload_too_large"


class AuthError(PluginError):
    status = 401
    code = "unauthorized"


class NotFoundError(PluginError):
    status = 404
    code = "not_found"


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


class UpstreamError(PluginError):
    status = 502
    code = "upstream_error"
