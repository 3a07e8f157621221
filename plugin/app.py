"""The Flask app factory: routes, API keys, limits, one error handler, metrics.

Example:
    >>> from osreco.plugin.app import create_app
    >>> from osreco.plugin.config import SidecarConfig
    >>> app = create_app(SidecarConfig.from_env())        # doctest: +SKIP
    >>> app.run(port=8080)                                # doctest: +SKIP

In production run it under gunicorn with the sidecar's settings (``plugin/gunicorn_conf.py``)::

    gunicorn -c python:osreco.plugin.gunicorn_conf -w 2 --threads 8 osreco.plugin.wsgi:app

Client input never becomes a 500: URLs over :data:`MAX_URL_BYTES` are a JSON 414, headers over
:data:`MAX_HEADER_BYTES` a JSON 431, bodies over ``max_body_bytes`` (chunked or not) a 413,
JSON nested deeper than :data:`MAX_JSON_DEPTH` a 400, and text that is not UTF-8 a 400.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from osreco.exporter.errors import AudioInputError, ImageInputError
from osreco.plugin import schemas
from osreco.plugin.config import DEV_HMAC_KEY, SidecarConfig
from osreco.plugin.errors import (
    ConfigError,
    HeadersTooLargeError,
    PayloadTooLargeError,
    PluginError,
    RequestError,
    URITooLongError,
)
from osreco.plugin.metrics import Metrics
from osreco.plugin.security import KeyChecker, presented_key, warn_dev_mode

log = logging.getLogger("osreco.plugin")
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
PLAYGROUND_PUBLIC = ("/playground", "/playground/static/")
"""The playground page and its static files: no data, public (a browser sends no key on navigation)."""
MAX_URL_BYTES = 8192
"""The longest path + query string answered; longer is a JSON 414."""
MAX_HEADER_BYTES = 16384
"""The most header bytes (names, values, ``": "`` and CRLF) answered; more is a JSON 431."""
MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a JSON body may have; deeper is a 400."""
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
_READ_CHUNK = 65536


class Services(Protocol):
    """What the routes call; ``osreco.plugin.service.SearchService`` is the real one."""

    def search(self, req: schemas.SearchRequest) -> dict[str, Any]: ...
    def recommend(self, req: schemas.PageRequest) -> dict[str, Any]: ...
    def similar(self, item_id: str, req: schemas.PageRequest) -> dict[str, Any]: ...
    def record_events(self, events: tuple[schemas.Event, ...]) -> dict[str, Any]: ...
    def forget(self, user_id: str) -> dict[str, Any]: ...
    def readiness(self) -> dict[str, Any]: ...
    def settings(self) -> dict[str, Any]: ...


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
    app.config["MAX_CONTENT_LENGTH"] = search_body_bytes(config)
    metrics = getattr(services, "metrics", None) or Metrics()
    if services is None:
        from osreco.plugin.service import SearchService

        services = SearchService.from_config(config, metrics)
    # the keys file is re-read when it changes (a revoked key stops working without a restart)
    checker = None if config.dev_mode else KeyChecker.from_file(config.api_keys_file or "")
    if config.dev_mode:
        warn_dev_mode(config.hmac_key, DEV_HMAC_KEY)   # once per process: a worker, `osreco serve`, an eval
    app.extensions["osreco.metrics"] = metrics
    app.extensions["osreco.services"] = services
    app.extensions["osreco.config"] = config
    _install_hooks(app, metrics, checker, config.playground_enabled)
    _install_routes(app, config, services, metrics)
    if config.playground_enabled:
        from osreco.plugin.playground import create_blueprint

        app.register_blueprint(create_blueprint(config, services, _json_body))
    return app


def _is_public(path: str, playground: bool) -> bool:
    """Paths answered without an API key: the public endpoints, the playground's page and static
    files, and every ``/playground`` path while the playground is off (a JSON 404)."""
    if path in PUBLIC_PATHS:
        return True
    if not playground:
        return path == "/playground" or path.startswith("/playground/")
    return path == PLAYGROUND_PUBLIC[0] or path.startswith(PLAYGROUND_PUBLIC[1])


def _install_hooks(app: Flask, metrics: Metrics, checker: KeyChecker | None, playground: bool = False) -> None:
    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        _check_request_line_and_headers()
        if checker is not None and not _is_public(request.path, playground):
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
    if isinstance(e, (PluginError, ConfigError, ImageInputError, AudioInputError)):  # the tree's, not only the plugin's
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


def _check_request_line_and_headers() -> None:
    """URL length, header size and the path's and query string's UTF-8, before anything else.

    Raises:
        URITooLongError, HeadersTooLargeError: over :data:`MAX_URL_BYTES` / :data:`MAX_HEADER_BYTES`.
        RequestError: the path or a query-string part is not UTF-8 (names the parameter).
    """
    env = request.environ
    path = str(env.get("PATH_INFO", "")).encode("latin-1", "replace")
    query = str(env.get("QUERY_STRING", "")).encode("latin-1", "replace")
    if len(path) + len(query) > MAX_URL_BYTES:
        raise URITooLongError(f"the URL is longer than {MAX_URL_BYTES} bytes", field="url",
                              fix="send long input in a POST body")
    size = sum(len(k) + len(v) + 4 for k, v in request.headers.items())
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLargeError(f"the request headers are larger than {MAX_HEADER_BYTES} bytes",
                                   field="headers", fix="send fewer or shorter headers")
    args = list((request.view_args or {}).keys())
    schemas.check_utf8(path, args[0] if len(args) == 1 else "path")
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        key = schemas.check_utf8(unquote_to_bytes(name.replace(b"+", b" ")), "query string")
        schemas.check_utf8(unquote_to_bytes(value.replace(b"+", b" ")), schemas.safe_name(key) or "query string")


def search_body_bytes(config: SidecarConfig) -> int:
    """The largest ``/v1/search`` body: the JSON limit, plus a base64 image when image search is
    on and base64 audio when voice search is on."""
    extra = config.limits.max_image_bytes * 4 // 3 + 4096 if config.image_bundle_dir else 0
    if config.asr_model_dir:
        extra += config.limits.max_audio_bytes * 4 // 3 + 4096
    return config.limits.max_body_bytes + extra


def _read_body(max_bytes: int) -> bytes:
    """The body, reading at most ``max_bytes + 1`` bytes whether it is chunked or not.

    werkzeug's own limit on a chunked stream stops reading at the limit without an error; the
    raw stream is read here instead (only where the server terminates it, as gunicorn does).

    Raises:
        PayloadTooLargeError: the body (or its Content-Length) is over ``max_bytes``.
    """
    too_large = PayloadTooLargeError(f"the request body is larger than {max_bytes} bytes", field="body",
                                     fix="send fewer events per batch or a shorter query")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise too_large
    env = request.environ
    if length is None and not env.get("wsgi.input_terminated"):
        return b""  # WSGI: without a length the body is readable only from a terminating server
    want = max_bytes + 1 if length is None else length
    stream, chunks, got = env["wsgi.input"], [], 0
    while got < want:
        chunk = stream.read(min(_READ_CHUNK, want - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got > max_bytes:
        raise too_large
    return b"".join(chunks)


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped), without
    parsing it; malformed text gets a number too and fails in the parser afterwards."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', data)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _json_body(max_bytes: int) -> object:
    data = _read_body(max_bytes)
    if json_depth(data) > MAX_JSON_DEPTH:
        raise RequestError(f"the body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels", field="body",
                           fix="send the flat request object the API describes")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not valid JSON: {e}", field="body",
                           fix="send a JSON object with Content-Type: application/json") from e


def _install_routes(app: Flask, config: SidecarConfig, services: Services, metrics: Metrics) -> None:
    limits = config.limits
    route: Callable[..., Any] = app.route

    search_bytes = search_body_bytes(config)

    @route("/v1/search", methods=["POST"])
    def search() -> Response:
        if request.mimetype == "multipart/form-data":  # a photo or a recording (image_search.py, voice.py)
            length = request.content_length
            if length is None or length > search_bytes:
                raise PayloadTooLargeError(f"the upload is larger than {search_bytes} bytes (or has no "
                                           "Content-Length)", field="body",
                                           fix="send a smaller image or recording")
            req = schemas.parse_search_form(request.form, request.files, limits)
        else:
            req = schemas.parse_search(_json_body(search_bytes), limits)
        return jsonify(services.search(req))

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
        return jsonify(services.forget(schemas.parse_user_id(user_id, "user_id")))

    @route("/v1/settings", methods=["GET"])
    def served_settings() -> Response:
        return jsonify(services.settings())

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
    if not config.playground_enabled:  # describe only the routes this app serves
        doc = json.loads(spec)
        doc["paths"] = {p: v for p, v in doc["paths"].items() if not p.startswith("/playground")}
        spec = json.dumps(doc, indent=2)

    @route("/openapi.json", methods=["GET"])
    def openapi() -> Response:
        return Response(spec, mimetype="application/json")
