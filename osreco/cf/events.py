"""Event kinds and their weights, the events index (close to OpenSearch UBI's event shape),
forgetting users, retention.

This module owns the event kinds: :data:`EVENT_KINDS` (what the events index stores and the
sidecar accepts), :data:`KIND_WEIGHTS`, and the kinds that training reads as feedback
(:data:`POSITIVE_KINDS`, :data:`NEGATIVE_KINDS`, :data:`FEEDBACK_KINDS`).

One document per interaction: ``user_key`` (pseudonym), ``item_id``, ``kind``, ``value``,
``timestamp``, ``query``, ``position``, ``session_id``. UBI events (``action_name``,
``client_id``, ``event_attributes.object.object_id``, ``event_attributes.position.ordinal``,
``user_query``) convert with :func:`from_ubi`.

Example:
    >>> write_events(client, "movies", [Event(key, "42", "click", now_iso())])
    >>> forget(client, "movies", "alice", privacy)
    >>> expire_events(client, "movies", days=365)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from opensearchpy import OpenSearch, TransportError
from opensearchpy.helpers import scan

from osreco.cf.errors import InteractionError
from osreco.cf.interactions import Interaction
from osreco.cf.privacy import PrivacyConfig, is_pseudonym
from osreco.ingest.bulk import RetryPolicy, bulk_write
from osreco.ingest.errors import BulkError, ConfigError

_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
EVENT_KINDS = ("view", "click", "add_to_cart", "purchase", "rating")
"""The kinds an event may have: what the events index stores and the sidecar accepts."""
KIND_WEIGHTS = {"view": 0.5, "click": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
"""Collaborative training value of one event of each kind ("rating" uses the event's own value)."""
POSITIVE_KINDS = frozenset({"click", "add_to_cart", "purchase"})
"""Kinds that tell training the user liked the item (a rating does when it is high)."""
NEGATIVE_KINDS = frozenset({"impression", "skip"})
"""Search-log kinds that training reads as negatives (never stored in the events index)."""
FEEDBACK_KINDS = frozenset(EVENT_KINDS) | NEGATIVE_KINDS
"""Every kind an exported training events file may hold."""

EVENTS_MAPPING: dict[str, object] = {
    "dynamic": "strict",
    "properties": {
        "user_key": {"type": "keyword"},
        "item_id": {"type": "keyword"},
        "kind": {"type": "keyword"},
        "value": {"type": "float"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
        "query": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}},
        "query_id": {"type": "keyword"},
        "position": {"type": "integer"},
        "session_id": {"type": "keyword"},
    },
}


@dataclass(frozen=True)
class Event:
    """One interaction as stored; ``user_key`` must already be a pseudonym.

    Raises:
        InteractionError: unknown kind, raw (not pseudonymized) user id, empty item id.
    """

    user_key: str
    item_id: str
    kind: str
    timestamp: str
    value: float = 1.0
    query: str | None = None
    query_id: str | None = None
    position: int | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise InteractionError(f"event kind {self.kind!r} is not one of {EVENT_KINDS}", field="kind",
                                   item_id=self.item_id)
        if not is_pseudonym(self.user_key):
            raise InteractionError("event user_key is not a pseudonym: raw user ids are never stored",
                                   field="user_key", fix="pass privacy.pseudonymize(user_id, key)")
        if not self.item_id:
            raise InteractionError("event without item_id", field="item_id")

    def training_value(self) -> float:
        """The value this event contributes to collaborative training."""
        return float(self.value) if self.kind == "rating" else KIND_WEIGHTS[self.kind] * float(self.value)

    def as_doc(self) -> dict[str, object]:
        """The document written to the events index (``None`` fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def events_index(prefix: str) -> str:
    """Name of the events index for ``prefix``."""
    return f"{prefix}-events"


def ensure_events_index(client: OpenSearch, prefix: str) -> str:
    """Create ``<prefix>-events`` when missing; returns its name."""
    name = events_index(prefix)
    if not client.indices.exists(index=name):
        try:
            client.indices.create(index=name, body={"settings": {"number_of_replicas": 0},
                                                    "mappings": EVENTS_MAPPING})
        except TransportError as e:
            if "resource_already_exists_exception" not in str(e):
                raise
    return name


def write_events(client: OpenSearch, prefix: str, events: Iterable[Event], refresh: bool | str = False,
                 policy: RetryPolicy = RetryPolicy()) -> int:
    """Append events; returns how many were written (``refresh``: False, True or ``"wait_for"``).

    ``policy`` is the writer's by default; a request-time caller passes one without retries
    (``RetryPolicy(max_retries=0, ...)``) so that a node that is down fails the request at once.

    Raises:
        BulkError: some events were refused (the first reasons are named).
    """
    name = ensure_events_index(client, prefix)
    actions = ({"_op_type": "index", "_index": name, "_source": e.as_doc()} for e in events)
    report = bulk_write(client, actions, policy, refresh=refresh)
    refused = list(report.failed.items()) + [(key, "not found") for key in report.missing]
    if refused:
        raise BulkError(f"{len(refused)} events refused by {name}: {refused[:3]}", index=name,
                        fix="check the events' fields against the events mapping")
    return report.written


def from_ubi(doc: Mapping[str, Any], privacy: PrivacyConfig, value: float = 1.0) -> Event:
    """Convert a UBI event document (``ubi_events``) into an osreco :class:`Event`.

    ``client_id`` (or ``user_id``) is pseudonymized; ``action_name`` must be one of :data:`EVENT_KINDS`.

    Raises:
        InteractionError: no user or object id, or an unsupported action.
    """
    attrs = doc.get("event_attributes") or {}
    obj = attrs.get("object") or {} if isinstance(attrs, dict) else {}
    user = doc.get("user_id") or doc.get("client_id")
    item = obj.get("object_id") if isinstance(obj, dict) else None
    if not user or not item:
        raise InteractionError("UBI event without client_id/user_id or event_attributes.object.object_id",
                               field="client_id", fix="send UBI events with a client and an object id")
    position = (attrs.get("position") or {}).get("ordinal") if isinstance(attrs, dict) else None
    return Event(user_key=privacy.pseudonymize(str(user)), item_id=str(item), kind=str(doc.get("action_name")),
                 timestamp=str(doc.get("timestamp")), value=value, query=doc.get("user_query"),
                 query_id=doc.get("query_id"), position=position, session_id=doc.get("session_id"))


def read_interactions_from_events(client: OpenSearch, prefix: str,
                                  user_key: str | None = None) -> Iterator[Interaction]:
    """Events as training :class:`Interaction` rows (user id = pseudonym, value by kind).

    Raises:
        InteractionError: the events index does not exist.
    """
    if not client.indices.exists(index=events_index(prefix)):
        raise InteractionError(f"no events index {events_index(prefix)!r}", index=events_index(prefix),
                               fix="send events first (POST /v1/events) or train from a file")
    query: dict[str, object] = {"query": {"term": {"user_key": user_key}} if user_key else {"match_all": {}}}
    for hit in scan(client, index=events_index(prefix), query=query):
        src = hit["_source"]
        kind = src.get("kind", "click")
        value = float(src.get("value", 1.0))
        value = value if kind == "rating" else KIND_WEIGHTS.get(kind, 1.0) * value
        yield Interaction(src["user_key"], src["item_id"], value, _epoch(src["timestamp"]))


def recent_events(client: OpenSearch, prefix: str, user_key: str, limit: int = 200) -> list[Interaction]:
    """The user's newest ``limit`` events, oldest first (input for an online fold-in)."""
    body = {"size": limit, "query": {"term": {"user_key": user_key}}, "sort": [{"timestamp": "desc"}]}
    hits = client.search(index=events_index(prefix), body=body, ignore_unavailable=True)["hits"]["hits"]
    out = []
    for hit in reversed(hits):
        src = hit["_source"]
        kind = src.get("kind", "click")
        value = float(src.get("value", 1.0)) * (1.0 if kind == "rating" else KIND_WEIGHTS.get(kind, 1.0))
        out.append(Interaction(src["user_key"], src["item_id"], value, _epoch(src["timestamp"])))
    return out


@dataclass
class ForgetReport:
    """What ``forget`` deleted, per index."""

    user_key: str
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def forget(client: OpenSearch, prefix: str, user_id: str, privacy: PrivacyConfig) -> ForgetReport:
    """Delete every document of a user (events, vector, any field holding the key) from ``<prefix>-*``.

    Matches the pseudonym in ``user_key`` and as ``_id``, and, defensively, the raw id
    (which should never have been stored) in ``user_key``; waits for the deletions to be
    searchable. Item documents (no ``user_key``) are never touched.

    Raises:
        BulkError: a delete-by-query failed on some index.
        ConfigError: the prefix is not a plain index name (wildcards would widen the deletion).
    """
    if not _PREFIX_RE.match(prefix):
        raise ConfigError(f"index prefix {prefix!r} must be lowercase letters, digits, '.', '_' or '-' "
                          "(no wildcards)", field="prefix")
    key = privacy.pseudonymize(user_id)
    report = ForgetReport(user_key=key)
    # The raw id is matched only in ``user_key``: as an ``_id`` it could be an item's id.
    query = {"query": {"bool": {"should": [{"terms": {"user_key": [key, user_id]}}, {"ids": {"values": [key]}}],
                                "minimum_should_match": 1}}}
    for index in _indices(client, f"{prefix}-*"):
        try:
            res = client.delete_by_query(index=index, body=query, refresh=True, conflicts="proceed")
        except TransportError as e:
            raise BulkError(f"forget failed on {index}: {e}", index=index, fix="retry `osreco users forget`") from e
        if res.get("failures"):
            raise BulkError(f"forget left documents in {index}: {res['failures'][:2]}", index=index,
                            fix="retry `osreco users forget`")
        if res.get("deleted"):
            report.deleted[index] = int(res["deleted"])
    return report


def expire_events(client: OpenSearch, prefix: str, days: float, now: datetime | None = None) -> int:
    """Delete events older than ``days`` (retention window); returns how many.

    Raises:
        ConfigError: ``days`` is not positive.
    """
    if not days > 0:
        raise ConfigError("retention days must be > 0", field="retention_days")
    ref = now or datetime.now(timezone.utc)
    cutoff = (ref - timedelta(days=days)).isoformat()
    name = events_index(prefix)
    if not client.indices.exists(index=name):
        return 0
    res = client.delete_by_query(index=name, body={"query": {"range": {"timestamp": {"lt": cutoff}}}},
                                 refresh=True, conflicts="proceed")
    return int(res.get("deleted", 0))


def _indices(client: OpenSearch, pattern: str) -> list[str]:
    return sorted(client.indices.get(index=pattern, ignore_unavailable=True, allow_no_indices=True).keys())


def _epoch(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value) / 1000.0  # epoch_millis, as the mapping stores numbers
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
