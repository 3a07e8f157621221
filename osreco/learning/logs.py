"""Reading the traffic logs a learn run uses: events and the query log, in a time window, with
forgotten users' documents dropped (nothing here sees a raw user id: documents carry pseudonyms),
through ``osreco.cf.events.read_events`` and ``osreco.cf.querylog.read_queries``; and the
timestamps they carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from opensearchpy import OpenSearch

from osreco.cf import events as cf_events
from osreco.cf import querylog as cf_querylog

__all__ = ["iso", "parse_time", "read_events", "read_queries"]


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


def read_events(client: OpenSearch, prefix: str, since: str | None = None, until: str | None = None,
                kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Events with ``since <= timestamp < until`` (of ``kinds``), oldest first, forgotten users dropped."""
    return list(cf_events.read_events(client, prefix, since=since, until=until,
                                      kinds=None if kinds is None else tuple(kinds)))


def read_queries(client: OpenSearch, prefix: str, since: str | None = None,
                 until: str | None = None) -> list[dict[str, Any]]:
    """Query-log documents with ``since <= timestamp < until``, oldest first, forgotten users dropped."""
    return list(cf_querylog.read_queries(client, prefix, since=since, until=until))
