"""Reading the traffic logs a learn run uses: events and the query log, in a time window, with
forgotten users' documents dropped (nothing here sees a raw user id: documents carry pseudonyms).

Uses ``osreco.cf.events.read_events`` and ``osreco.cf.querylog.read_queries`` when they exist
(they drop forgotten users themselves); otherwise scans ``<prefix>-events`` and
``<prefix>-queries`` by ``timestamp`` here and drops the tombstoned users.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.helpers import scan

from osreco.cf import events as cf_events
from osreco.cf.forget import forgotten_keys

__all__ = ["iso", "parse_time", "read_events", "read_queries", "queries_index"]


def iso(t: datetime) -> str:
    """``t`` as the ISO timestamp the logs store (UTC, milliseconds, ``Z``)."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: Any) -> datetime:
    """A stored timestamp (ISO string or epoch seconds/millis) as an aware datetime."""
    if isinstance(value, (int, float)):
        v = float(value)
        return datetime.fromtimestamp(v / 1000.0 if v > 1e11 else v, tz=timezone.utc)
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def queries_index(prefix: str) -> str:
    """Name of the query log index (``<prefix>-queries``)."""
    return f"{prefix}-queries"


def _as_dict(doc: Any) -> dict[str, Any]:
    if isinstance(doc, Mapping):
        return dict(doc)
    as_doc = getattr(doc, "as_doc", None)
    return dict(as_doc()) if callable(as_doc) else dict(vars(doc))


def _scan(client: OpenSearch, index: str, since: str | None, until: str | None,
          kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    if not client.indices.exists(index=index):
        return []
    rng: dict[str, Any] = {"format": "strict_date_optional_time"}
    if since:
        rng["gte"] = since
    if until:
        rng["lt"] = until
    filters: list[dict[str, Any]] = [{"range": {"timestamp": rng}}]
    if kinds is not None:
        filters.append({"terms": {"kind": sorted(kinds)}})
    docs = [h["_source"] for h in scan(client, index=index, query={"query": {"bool": {"filter": filters}}},
                                       size=2000)]
    gone = forgotten_keys(client, index.rsplit("-", 1)[0])
    docs = [d for d in docs if d.get("user_key") not in gone]
    return sorted(docs, key=lambda d: parse_time(d.get("timestamp", 0)))


def read_events(client: OpenSearch, prefix: str, since: str | None = None, until: str | None = None,
                kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Events with ``since <= timestamp < until`` (of ``kinds``), oldest first, forgotten users dropped."""
    shared = getattr(cf_events, "read_events", None)
    if callable(shared):
        return [_as_dict(d) for d in shared(client, prefix, since=since, until=until,
                                            kinds=None if kinds is None else tuple(kinds))]
    return _scan(client, cf_events.events_index(prefix), since, until, kinds)


def read_queries(client: OpenSearch, prefix: str, since: str | None = None,
                 until: str | None = None) -> list[dict[str, Any]]:
    """Query-log documents with ``since <= timestamp < until``, oldest first, forgotten users dropped."""
    try:
        querylog: Any = importlib.import_module("osreco.cf.querylog")
    except ImportError:   # the shared reader is not there: scan here
        querylog = None
    shared = getattr(querylog, "read_queries", None)
    if callable(shared):
        return [_as_dict(d) for d in shared(client, prefix, since=since, until=until)]
    return _scan(client, queries_index(prefix), since, until)
