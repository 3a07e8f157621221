"""The Flask app factory: routes, API keys, limits, one error handler, metrics.

Example:
    >>> from osreco.plugin.app import create_app
    >>> from osreco.plugin.config import SidecarConfig
    >>> app = create_app(SidecarConfig.from_env())        # doctest: +SKIP
    >>> app.run(port=8080)                                # doctest: +SKIP

In production run it under gunicorn: ``gunicorn -w 2 --threads 8 osreco.plugin.wsgi:app``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from osreco.plugin import schemas
from osreco.plugin.config import SidecarConfig
from osreco.plugin.errors import ConfigError, PayloadTooLargeError, PluginError, RequestError
from osreco.plugin.metrics import Metrics
from osreco.plugin.security import KeyChecker, load_keys, presented_key

log = logging.getLogger("osreco.plugin")
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


class Services(Protocol):
    """What the routes call; ``osreco.plugin.service.SearchService`` is the real one."""

    def search(self, req: schemas.SearchRequest) -> dict[str, Any]: ...
    def recommend(self, req: schemas.PageRequest) -> dict[str, Any]: ...
    def similar(self, item_id: str, req: schemas.PageRequest) -> dict[str, Any]: ...
    def record_events(self, events: tuple[schemas.Event, ...]) -> dict[str, Any]: ...
    def forget(self, user_id: str) -> dict[str, Any]: ...
    def readiness(self) -> dict[str, Any]: ...


def create_app(config: SidecarConfig, services: Services | None = None) -> Flask:
    """Build the sidecar app.

    Args:
        config: the validated sidecar configuration.
        services: the collaborators behind the routes; ``None`` builds the real
            ``SearchService`` (OpenSearch, encoder, user store). Pure-unit tests pass fakes.

    Returns:
        The Flask app; its metrics are in ``app.extensions["osreco.metrics"]``.

    Raises:
        ConfigError: the API keys file is missing or malformed.
    """
    app = Flask("osreco.plugin")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # on Flask's default provider, not the base type
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes
    metrics = getattr(services, "metrics", None) or Metrics()
    if services is None:
        from osreco.plugin.service import SearchService

        services = SearchService.from_config(config, metrics)
    checker = None if config.dev_mode else KeyChecker(load_keys(config.api_keys_file or ""))
    app.extensions["osreco.metrics"] = metrics
    app.extensions["osreco.services"] = services
    app.extensions["osreco.config"] = config
    _install_hooks(app, metrics, checker)
    _install_routes(app, config, services, metrics)
    return app


def _install_hooks(app: Flask, metrics: Metrics, checker: KeyChecker | None) -> None:
    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        if checker is not None and request.path not in PUBLIC_PATHS:
            g.api_key = checker.check(presented_key(request.headers)).key_id

    @app.after_request
    def _observe(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.request_seconds.labels(endpoint, str(resp.status_code)).observe(
            time.perf_counter() - g.get("t0", time.perf_counter()))
        if resp.status_code >= 400:
            code = (resp.get_json(silent=True) or {}).get("error", {}).get("code", str(resp.status_code))
            metrics.errors.labels(endpoint, code).inc()
        return resp

    @app.errorhandler(Exception)
    def _handle(e: Exception) -> tuple[Response, int] | Response:
        return error_response(e)


def error_response(e: Exception) -> tuple[Response, int]:
    """The one mapping from exceptions to HTTP: plugin errors carry their status,
    werkzeug's HTTP errors keep theirs, anything else is a logged 500 without internals."""
    if isinstance(e, (PluginError, ConfigError)):  # ConfigError is the tree's, not the plugin's
        resp = jsonify(e.to_dict())
        retry = getattr(e, "retry_after_s", None)
        if retry is not None:
            resp.headers["Retry-After"] = str(retry)
        if e.status >= 500:
            log.warning("%s: %s", e.code, e)
        return resp, e.status
    if isinstance(e, HTTPException):
        if e.code == 413:
            return error_response(PayloadTooLargeError(
                "the request body is too large", field="body",
                fix="send fewer events per batch or a shorter query"))
        code = (e.name or "http_error").lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": e.description}}), e.code or 500
    log.exception("unhandled error")
    return jsonify({"error": {"code": "internal_error", "message": "internal error"}}), 500


def _json_body(max_bytes: int) -> object:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLargeError(f"the request body is larger than {max_bytes} bytes", field="body")
    data = request.get_data(cache=False)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the request body is larger than {max_bytes} bytes", field="body")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not valid JSON: {e}", field="body",
                           fix="send a JSON object with Content-Type: application/json") from e


def _install_routes(app: Flask, config: SidecarConfig, services: Services, metrics: Metrics) -> None:
    limits = config.limits
    route: Callable[..., Any] = app.route

    @route("/v1/search", methods=["POST"])
    def search() -> Response:
        return jsonify(services.search(schemas.parse_search(_json_body(limits.max_body_bytes), limits)))

    @route("/v1/recommend", methods=["GET"])
    def recommend() -> Response:
        return jsonify(services.recommend(schemas.parse_page_args(request.args, limits, need_user=True)))

    @route("/v1/items/<path:item_id>/similar", methods=["GET"])
    def similar(item_id: str) -> Response:
        item = schemas.parse_identifier(item_id, "item_id")
        return jsonify(services.similar(item, schemas.parse_page_args(request.args, limits, need_user=False)))

    @route("/v1/events", methods=["POST"])
    def events() -> tuple[Response, int]:
        parsed = schemas.parse_events(_json_body(limits.max_body_bytes), limits)
        return jsonify(services.record_events(parsed)), 202

    @route("/v1/users/<path:user_id>", methods=["DELETE"])
    def forget(user_id: str) -> Response:
        return jsonify(services.forget(schemas.parse_identifier(user_id, "user_id")))

    @route("/healthz", methods=["GET"])
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @route("/readyz", methods=["GET"])
    def readyz() -> Response:
        return jsonify({"status": "ready", **services.readiness()})

    @route("/metrics", methods=["GET"])
    def metrics_route() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    spec = resources.files("osreco.plugin").joinpath("openapi.json").read_text(encoding="utf-8")

    @route("/openapi.json", methods=["GET"])
    def openapi() -> Response:
        return Response(spec, mimetype="application/json")
