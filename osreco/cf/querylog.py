"""The query log: one document per served search, recommend or similar request, in
``<prefix>-queries`` (``_id`` = the response's ``query_id``), so that events can be joined to
what was shown and the learning loop can re-rank what was served counterfactually.

A document: ``query_id`` (32 hex digits), ``user_key`` (pseudonym; absent for an anonymous
request), ``timestamp``, ``endpoint`` (:data:`ENDPOINTS`), ``query`` (text; absent without one),
``query_class`` (:data:`QUERY_CLASSES`; ``none`` = no query: recommend, similar), ``language``,
``k``, ``page``, ``item_id`` (the seed item of a similar request), ``served`` and ``fusion``.
``served`` lists the fused candidates (at least the top 50 when the endpoint retrieved that
many, not only the page shown): ``{item_id, position, score, signals: {bm25, dense, taste,
popularity, ...}}``, each signal's value the 1-based rank of the item in that signal's own list
(``null``: the signal did not retrieve it). ``fusion`` holds the weights the request was ranked
with. Both are stored but not indexed (``"enabled": false``).

Forgetting a user deletes their documents here like everywhere else (``osreco.cf.forget`` covers
every ``<prefix>-*`` index by ``user_key``), and :func:`read_queries` drops tombstoned users.

Example:
    >>> write_queries(client, "movies", [query_doc(new_query_id(), "search", query="space", ...)])
    >>> for doc in read_queries(client, "movies", since="2026-11-01T00:00:00Z"): ...
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from opensearchpy import OpenSearch, TransportError

from osreco.cf.errors import InteractionError
from osreco.cf.events import scan_window
from osreco.cf.privacy import is_pseudonym
from osreco.ingest.bulk import RetryPolicy, bulk_write
from osreco.ingest.errors import BulkError

__all__ = ["ENDPOINTS", "QUERIES_MAPPING", "QUERY_CLASSES", "SIGNALS", "ensure_queries_index", "new_query_id",
           "queries_index", "query_doc", "read_queries", "with_query_text", "write_queries"]

ENDPOINTS = ("search", "recommend", "similar")
"""The endpoints whose responses are logged."""
QUERY_CLASSES = ("listing", "text", "title", "none")
"""Query classes (``osreco.plugin.taste``); ``none``: no query (recommend, similar)."""
SIGNALS = ("bm25", "dense", "taste", "popularity")
"""Signals every ``served`` entry names (``null`` when absent); others are added as they come."""
SERVED_MIN = 50
"""How many fused candidates a request logs at least, when it retrieved that many."""

QUERIES_MAPPING: dict[str, object] = {
    "dynamic": "strict",
    "properties": {
        "query_id": {"type": "keyword"},
        "user_key": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
        "endpoint": {"type": "keyword"},
        "query": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}},
        "query_class": {"type": "keyword"},
        "language": {"type": "keyword"},
        "k": {"type": "integer"},
        "page": {"type": "integer"},
        "item_id": {"type": "keyword"},
        "served": {"type": "object", "enabled": False},
        "fusion": {"type": "object", "enabled": False},
    },
}


def queries_index(prefix: str) -> str:
    """Name of the query-log index for ``prefix``."""
    return f"{prefix}-queries"


def new_query_id() -> str:
    """A fresh query id: 32 hex digits (a uuid4)."""
    return uuid.uuid4().hex


def ensure_queries_index(client: OpenSearch, prefix: str) -> str:
    """Create ``<prefix>-queries`` when missing; returns its name."""
    name = queries_index(prefix)
    if client.indices.exists(index=name):
        return name
    try:
        client.indices.create(index=name, body={"settings": {"number_of_replicas": 0}, "mappings": QUERIES_MAPPING})
    except TransportError as e:
        if "resource_already_exists_exception" not in str(e):
            raise
    return name


def query_doc(query_id: str, endpoint: str, timestamp: str, served: Sequence[Mapping[str, Any]],
              fusion: Mapping[str, Any], *, user_key: str | None = None, query: str | None = None,
              query_class: str = "none", language: str | None = None, k: int = 10, page: int = 1,
              item_id: str | None = None) -> dict[str, Any]:
    """One query-log document (``None`` fields left out).

    Raises:
        InteractionError: an unknown endpoint or query class, or a ``user_key`` that is not a pseudonym.
    """
    if endpoint not in ENDPOINTS:
        raise InteractionError(f"endpoint {endpoint!r} is not one of {ENDPOINTS}", field="endpoint")
    if query_class not in QUERY_CLASSES:
        raise InteractionError(f"query class {query_class!r} is not one of {QUERY_CLASSES}", field="query_class")
    if user_key is not None and not is_pseudonym(user_key):
        raise InteractionError("query log user_key is not a pseudonym: raw user ids are never stored",
                               field="user_key")
    doc: dict[str, Any] = {"query_id": query_id, "user_key": user_key, "timestamp": timestamp, "endpoint": endpoint,
                           "query": query, "query_class": query_class, "language": language, "k": k, "page": page,
                           "item_id": item_id, "served": [dict(s) for s in served], "fusion": dict(fusion)}
    return {key: v for key, v in doc.items() if v is not None}


def write_queries(client: OpenSearch, prefix: str, docs: Iterable[Mapping[str, Any]],
                  policy: RetryPolicy = RetryPolicy()) -> int:
    """Store query-log documents (``_id`` = ``query_id``; writing one again replaces it); returns
    how many were written.

    Raises:
        BulkError: some documents were refused (the first reasons are named).
    """
    name = ensure_queries_index(client, prefix)
    actions = [{"_op_type": "index", "_index": name, "_id": d["query_id"], "_source": dict(d)} for d in docs]
    if not actions:
        return 0
    report = bulk_write(client, actions, policy)
    refused = [*report.failed.items(), *((key, "not found") for key in report.missing)]
    if refused:
        raise BulkError(f"{len(refused)} query-log documents refused by {name}: {refused[:3]}", index=name,
                        retryable=all(k in report.retryable for k, _ in refused),
                        fix="check the documents against the query-log mapping (osreco.cf.querylog)")
    return int(report.written)


def read_queries(client: OpenSearch, prefix: str, since: str | None = None, until: str | None = None,
                 endpoints: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Logged requests ordered by timestamp (then ``query_id``), forgotten users left out.

    Args:
        since, until: ISO 8601 bounds (``since`` inclusive, ``until`` exclusive); None = open.
        endpoints: only these endpoints (default: all).
    """
    filters = [] if endpoints is None else [{"terms": {"endpoint": sorted(set(endpoints))}}]
    yield from scan_window(client, queries_index(prefix), prefix, since, until, "query_id", filters, size=500)


def with_query_text(client: OpenSearch, prefix: str, events: Iterable[dict[str, Any]],
                    batch: int = 500) -> Iterator[dict[str, Any]]:
    """``events`` (e.g. :func:`osreco.cf.events.read_events`) with ``query`` filled in from the
    query log where an event has a ``query_id`` but no text (impressions usually carry only the
    id), one ``mget`` per ``batch`` events; order kept. Training reads query text, not ids."""
    name = queries_index(prefix)
    chunk: list[dict[str, Any]] = []

    def flush() -> Iterator[dict[str, Any]]:
        ids = sorted({e["query_id"] for e in chunk if e.get("query_id") and not e.get("query")})
        texts: dict[str, str] = {}
        if ids:
            docs = client.mget(index=name, body={"ids": ids}, _source=["query"], ignore=[404])
            texts = {d["_id"]: d["_source"]["query"] for d in docs.get("docs", [])
                     if d.get("found") and d.get("_source", {}).get("query")}
        for e in chunk:
            qid = e.get("query_id")
            yield {**e, "query": texts[qid]} if not e.get("query") and qid in texts else e

    for event in events:
        chunk.append(event)
        if len(chunk) >= batch:
            yield from flush()
            chunk = []
    yield from flush()
