"""The playground: a browser page over the sidecar to search, compare and debug (``/playground``).

Registered by :func:`osreco.plugin.app.create_app` when ``dev_mode`` or ``playground`` is on. The
page and its static files (``plugin/playground/``) carry no data and are public; every
``/playground/api/*`` call passes the sidecar's normal API-key check. The page is sent with a
strict Content-Security-Policy (:data:`PAGE_CSP`).

``POST /playground/api/search`` is ``/v1/search`` plus the parsed intent as chips, a ``drop`` list
that removes chips before the search, and a ``variant`` that overrides the fusion settings,
personalization and the reranker for that request only. Impressions (one per shown result) and
clicks the page posts to ``/v1/events`` carry the response's ``query_id``, the result's
``position`` and ``session_id: "playground"``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Response, jsonify, request

from osreco.plugin import schemas
from osreco.plugin.config import Limits, SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.errors import NotFoundError, PluginError, RequestError
from osreco.plugin.fusion import FusionSettings
from osreco.plugin.intent.types import Intent
from osreco.plugin.query import build_history
from osreco.plugin.service import SearchService

__all__ = ["PAGE_CSP", "Variant", "chips", "create_blueprint", "drop_parts", "parse_playground_search",
           "settings_view"]

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; "
            "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
VARIANT_KEYS = ("fusion", "bm25_weight", "dense_weight", "cf_weight", "personalization", "rerank")
FUSION_NAMES = {"rrf": "rrf", "weighted": "linear", "linear": "linear"}
"""The page's fusion names -> FusionSettings methods (``weighted`` is linear fusion)."""
HISTORY_SHOWN = 10
MAX_VARIANT_WEIGHT = 100.0
"""Largest fusion weight a variant may set (huge weights overflow the fused scores)."""
SECRET_SETTINGS = ("hmac_key",)


@dataclass(frozen=True)
class Variant:
    """One side of a comparison: the fusion to use, with or without the user and the reranker."""

    fusion: FusionSettings
    personalization: bool = True
    rerank: bool = True


# ---- request parsing -----------------------------------------------------------------------

def parse_variant(raw: object, base: FusionSettings) -> Variant:
    """Validate a ``variant`` object against the served fusion ``base``.

    Raises:
        RequestError: naming ``variant`` or ``variant.<name>``.
    """
    if raw is None:
        return Variant(base)
    if not isinstance(raw, Mapping):
        raise RequestError("variant must be an object", field="variant",
                           fix=f"send an object with any of {', '.join(VARIANT_KEYS)}")
    unknown = sorted(set(raw) - set(VARIANT_KEYS))
    if unknown:
        raise RequestError(f"variant has unknown key {unknown[0]!r}", field=f"variant.{schemas.safe_name(unknown[0])}",
                           fix=f"use only {', '.join(VARIANT_KEYS)}")
    fusion = base
    if "fusion" in raw:
        method = raw["fusion"]
        if not isinstance(method, str) or method not in FUSION_NAMES:
            raise RequestError(f"variant.fusion must be one of rrf, weighted; got {method!r}"[:200],
                               field="variant.fusion")
        fusion = replace(fusion, method=FUSION_NAMES[method])
    for name in ("bm25_weight", "dense_weight", "cf_weight"):
        if name not in raw:
            continue
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= MAX_VARIANT_WEIGHT:
            raise RequestError(f"variant.{name} must be a number in 0..{MAX_VARIANT_WEIGHT:g}", field=f"variant.{name}")
        if name == "cf_weight":  # the taste weight of every query class, for this request
            fusion = replace(fusion, cf_weight=float(value), listing_cf_weight=float(value),
                             title_cf_weight=float(value))
        elif name == "bm25_weight":
            fusion = replace(fusion, bm25_weight=float(value))
        else:
            fusion = replace(fusion, dense_weight=float(value))
    flags = {}
    for name in ("personalization", "rerank"):
        value = raw.get(name, True)
        if not isinstance(value, bool):
            raise RequestError(f"variant.{name} must be true or false", field=f"variant.{name}")
        flags[name] = value
    return Variant(fusion, **flags)


def parse_playground_search(raw: object, limits: Limits,
                            base: FusionSettings) -> tuple[schemas.SearchRequest, tuple[str, ...], Variant]:
    """Validate a ``POST /playground/api/search`` body: the search, the chip keys to drop, the variant.

    Raises:
        RequestError: naming the first invalid field.
    """
    if not isinstance(raw, Mapping):
        raise RequestError("the body must be a JSON object", field="body")
    allowed = ("q", "user_id", "k", "drop", "variant")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise RequestError(f"playground search has unknown key {unknown[0]!r}", field=schemas.safe_name(unknown[0]),
                           fix=f"use only {', '.join(allowed)}")
    req = schemas.parse_search({k: v for k, v in raw.items() if k in ("q", "user_id", "k") and v is not None},
                               limits)
    drop = raw.get("drop") or []
    if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop) or len(drop) > 100:
        raise RequestError("drop must be a list of chip keys (strings)", field="drop",
                           fix="send the data-key of the chips to remove")
    return req, tuple(drop), parse_variant(raw.get("variant"), base)


# ---- chips ---------------------------------------------------------------------------------

def _bounds_label(field: str, bounds: Mapping[str, float]) -> str:
    ops = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
    return f"{field} " + " and ".join(f"{ops[op]} {v:g}" for op, v in bounds.items())


def chips(intent: Intent) -> list[dict[str, Any]]:
    """The parsed intent as chips: removable filters, ranges, exclusions, sort and linked title,
    then the language and parser used (information only)."""
    out: list[dict[str, Any]] = []

    def add(key: str, label: str, kind: str, removable: bool = True) -> None:
        out.append({"key": key, "label": label, "kind": kind, "removable": removable})

    for f in intent.filters:
        add(f"filter:{f.field}={f.value}", f"{f.field}: {f.value}", "filter")
    for r in intent.ranges:
        add(f"range:{r.field}", _bounds_label(r.field, r.bounds()), "range")
    for f in intent.exclusions:
        add(f"exclude:{f.field}={f.value}", f"not {f.field}: {f.value}", "exclude")
    if intent.sort is not None:
        add("sort", f"sort: {intent.sort.key} {intent.sort.order}", "sort")
    if intent.linked is not None and intent.linked.item_id is not None:
        add("linked", f"{'like' if intent.linked.route == 'similar' else 'title'}: "
                      f"{intent.linked.title or intent.linked.item_id}", "linked")
    add(f"language:{intent.language}", f"language: {intent.language}", "info", removable=False)
    add(f"parser:{intent.parser}", f"parser: {intent.parser}", "info", removable=False)
    return out


def drop_parts(intent: Intent, keys: tuple[str, ...]) -> Intent:
    """``intent`` without the parts named by the chip ``keys`` (a dropped linked title's words
    become free text again).

    Raises:
        RequestError: a key names no removable chip of ``intent`` (``field="drop"``).
    """
    removable = {c["key"] for c in chips(intent) if c["removable"]}
    for key in keys:
        if key not in removable:
            raise RequestError(f"drop: {key!r} is not a removable chip of this query"[:300], field="drop",
                               fix="send keys from the chips of the same query's last response")
    if not keys:
        return intent
    dropped = set(keys)
    out = replace(intent,
                  filters=tuple(f for f in intent.filters if f"filter:{f.field}={f.value}" not in dropped),
                  ranges=tuple(r for r in intent.ranges if f"range:{r.field}" not in dropped),
                  exclusions=tuple(f for f in intent.exclusions if f"exclude:{f.field}={f.value}" not in dropped),
                  sort=None if "sort" in dropped else intent.sort)
    if "linked" in dropped and intent.linked is not None:
        text = intent.text
        if intent.linked.route == "similar":  # its words were cut from the text
            text = " ".join(filter(None, (intent.linked.phrase.strip(), intent.text.strip())))
        out = replace(out, linked=None, text=text)
    return out


# ---- the variant search --------------------------------------------------------------------

def search_variant(service: SearchService, req: schemas.SearchRequest, drop: tuple[str, ...],
                   variant: Variant) -> dict[str, Any]:
    """``service.search`` of ``req`` with the intent's ``drop``ped parts removed and ``variant``'s
    fusion, personalization and reranker, for this request only; plus the chips."""
    intent = drop_parts(service.parse(req), drop)
    run = copy.copy(service)      # shares every collaborator; only this request's view differs

    def parsed(req: schemas.SearchRequest) -> Intent:
        return intent

    # this copy answers the already parsed intent (the evaluation's variants override parse too)
    run.parse = parsed  # type: ignore[method-assign]  # an instance attribute, on a per-request copy
    run.config = replace(service.config, fusion=variant.fusion)
    if not variant.rerank and service.models.reranker is not None:
        models = copy.copy(service.models)
        models.reranker = None
        run.models = models
    if not variant.personalization:
        req = replace(req, user_id=None)
    out = run.search(req)
    out["chips"] = chips(intent)
    return out


# ---- settings and users ----------------------------------------------------------------------

def _public_url(url: str) -> str:
    """``url`` without credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path, "", ""))


def settings_view(config: SidecarConfig) -> dict[str, Any]:
    """The effective sidecar settings, secrets left out (the HMAC key, OpenSearch's password)."""
    out = asdict(config)
    for name in SECRET_SETTINGS:
        out[name] = "(set)" if out.get(name) else None
    os_cfg = out.pop("opensearch")
    out["opensearch"] = {"url": _public_url(config.opensearch.url), "username": os_cfg.get("username"),
                         "password": "(set)" if os_cfg.get("password") else None,
                         "ca_path": os_cfg.get("ca_path"), "verify_certs": os_cfg.get("verify_certs"),
                         "timeout_s": os_cfg.get("timeout_s")}
    out["facets"], out["rerank_fields"] = list(config.facets), list(config.rerank_fields)
    if config.llm_url:  # it may carry credentials or a token in its query
        out["llm_url"] = _public_url(config.llm_url)
    return out


def _bundle(model: Any) -> dict[str, Any] | None:
    manifest = getattr(model, "manifest", None)
    if manifest is None:
        return None
    keep = ("artifact_id", "model_name", "task", "dim", "pooling", "max_length", "precision", "optimize")
    return {k: getattr(manifest, k, None) for k in keep}


def _index_stats(service: SearchService) -> dict[str, Any]:
    t = service.transport
    stats = t.call("index stats", t.client.indices.stats, index=t.alias, metric="docs,store")
    total = stats.get("_all", {}).get("primaries", {})
    return {"alias": t.alias, "docs": total.get("docs", {}).get("count"),
            "size_bytes": total.get("store", {}).get("size_in_bytes")}


def settings_payload(config: SidecarConfig, service: SearchService) -> dict[str, Any]:
    """What ``GET /playground/api/settings`` answers (see the module docstring)."""
    try:
        readiness: dict[str, Any] = {"status": "ready", **service.readiness()}
    except PluginError as e:
        readiness = {"status": "not_ready", **e.to_dict()}
    try:
        index: dict[str, Any] = _index_stats(service)
    except PluginError as e:
        index = {"alias": config.alias, "docs": None, "size_bytes": None, **e.to_dict()}
    cf = service.users.cf_model
    cf_meta = None if cf is None else {"dir": config.cf_model_dir, "dim": cf.dim, **dict(cf.meta)}
    return {"settings": settings_view(config), "bundle": _bundle(service.models.encoder),
            "reranker": _bundle(service.models.reranker), "cf_model": cf_meta, "index": index,
            "readiness": readiness, "degradations": degradations_now(service),
            "features": {"image": False, "audio": False}}


def degradations_now(service: SearchService) -> dict[str, Any]:
    """What is degraded right now: no encoder (BM25 only) and why, the bundle hot-reload's last
    error, whether the reranker and the CF model are loaded, and the degraded requests served so
    far in this process, per kind (``osreco_degradations_total``)."""
    counts: dict[str, float] = {}
    for metric in service.metrics.degradations.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                kind = sample.labels.get("kind", "?")
                counts[kind] = counts.get(kind, 0.0) + sample.value
    reloader = service.reloader
    return {"encoder": None if service.models.encoder is not None else (service.models.encoder_error or "not loaded"),
            "bundle_reload": getattr(reloader, "last_error", None),
            "reranker_loaded": service.models.reranker is not None,
            "cf_model_loaded": service.users.cf_model is not None,
            "requests_degraded": {k: int(v) for k, v in sorted(counts.items())}}


def user_payload(service: SearchService, user_id: str) -> dict[str, Any]:
    """The user's newest :data:`HISTORY_SHOWN` history items with titles, newest first."""
    deg = Degradations(service.metrics)
    user = service.users.context(user_id, deg)
    known = user is not None and (bool(user.history) or user.vector is not None)
    ids = list(reversed(user.history[-HISTORY_SHOWN:])) if user is not None else []
    titles: dict[str, Any] = {}
    if ids:
        lists, _ = service.transport.search("history", "history", build_history(tuple(ids), service.fields), deg)
        hits = lists["history"].hits if "history" in lists else []
        titles = {str(h["_id"]): (h.get("_source") or {}).get(service.fields.title) for h in hits}
    return {"user_id": user_id, "known": known,
            "history": [{"item_id": i, "title": titles.get(i) or i} for i in ids],
            "degradations": deg.items}


# ---- the blueprint -------------------------------------------------------------------------

def _asset(name: str) -> bytes:
    path = resources.files("osreco.plugin").joinpath("playground").joinpath(name)
    if not path.is_file():
        raise NotFoundError(f"the playground file {name} is not installed",
                            fix="reinstall osreco (plugin/playground/ is package data)")
    return path.read_bytes()


def create_blueprint(config: SidecarConfig, services: Any, json_body: Any) -> Blueprint:
    """The ``/playground`` routes over ``services``; ``json_body`` is the app's bounded JSON body
    reader. The API answers only over the real :class:`SearchService` (a JSON 404 over test fakes)."""
    bp = Blueprint("playground", __name__)
    limits = config.limits

    def service() -> SearchService:
        if not isinstance(services, SearchService):
            raise NotFoundError("the playground API needs the sidecar's SearchService",
                                fix="serve the real sidecar (`osreco serve`)")
        return services

    @bp.route("/playground", methods=["GET"])
    def page() -> Response:
        resp = Response(_asset("index.html"), mimetype="text/html")
        resp.headers["Content-Security-Policy"] = PAGE_CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @bp.route("/playground/static/<path:name>", methods=["GET"])
    def static_file(name: str) -> Response:
        if name not in STATIC_TYPES:
            raise NotFoundError(f"no playground file {name!r}"[:200], fix=f"one of {', '.join(STATIC_TYPES)}")
        resp = Response(_asset(name), mimetype=STATIC_TYPES[name])
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    @bp.route("/playground/api/settings", methods=["GET"])
    def settings() -> Response:
        return jsonify(settings_payload(config, service()))

    @bp.route("/playground/api/user", methods=["GET"])
    def user() -> Response:
        if "user_id" not in request.args:
            raise RequestError("user_id is required", field="user_id", fix="pass ?user_id=<id>")
        return jsonify(user_payload(service(), schemas.parse_user_id(request.args["user_id"], "user_id")))

    @bp.route("/playground/api/search", methods=["POST"])
    def search() -> Response:
        req, drop, variant = parse_playground_search(json_body(limits.max_body_bytes), limits, config.fusion)
        return jsonify(search_variant(service(), req, drop, variant))

    return bp
