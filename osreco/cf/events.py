"""Event kinds and their weights, the events index (close to OpenSearch UBI's event shape),
retention. Forgetting users is ``osreco.cf.forget``.

This module owns the event kinds: :data:`EVENT_KINDS` (what the events index stores and the
sidecar accepts), :data:`KIND_WEIGHTS`, the kinds that are interactions (:data:`INTERACTION_KINDS`:
popularity, fold-in and CF training read only these) and the kinds that training reads as
feedback (:data:`POSITIVE_KINDS`, :data:`NEGATIVE_KINDS`, :data:`FEEDBACK_KINDS`).

One document per event: ``event_id``, ``user_key`` (pseudonym), ``item_id``, ``kind``,
``value``, ``timestamp``, ``query``, ``query_id`` (the served response's, see
``osreco.cf.querylog``), ``position`` (1-based, as shown), ``session_id``, ``unknown_item``
(the item was not in the catalog when the event arrived: stored, never trained on).
:func:`read_events` reads them back in timestamp order without forgotten users. The document's ``_id`` is its
``event_id`` (the client's, or :meth:`Event.derived_id`) and it is written with ``op_type:
create``, so writing the same event twice stores it once (the second is counted as a duplicate).
UBI events (``action_name``, ``client_id``, ``event_attributes.object.object_id``,
``event_attributes.position.ordinal``, ``user_query``) convert with :func:`from_ubi`.

Example:
    >>> write_events(client, "movies", [Event(key, "42", "click", now_iso())])
    >>> expire_events(client, "movies", days=365)   # also drops events dated in the future
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from opensearchpy import OpenSearch, TransportError
from opensearchpy.helpers import scan

from osreco.cf.errors import InteractionError
from osreco.cf.forget import forgotten_keys
from osreco.cf.interactions import Interaction
from osreco.cf.privacy import PrivacyConfig, is_pseudonym
from osreco.ingest.bulk import RetryPolicy, bulk_write
from osreco.ingest.errors import BulkError, ConfigError

EVENT_KINDS = ("view", "impression", "click", "skip", "dwell", "add_to_cart", "purchase", "rating")
"""The kinds an event may have: what the events index stores and the sidecar accepts (UBI's
action names). ``impression``: one item shown (``query_id`` and 1-based ``position`` required);
``skip``: shown and explicitly passed over; ``dwell``: seconds spent on the item (``value`` > 0)."""
KIND_WEIGHTS = {"view": 0.5, "click": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
"""Collaborative training value of one event of each kind ("rating" uses the event's own value)."""
INTERACTION_KINDS = frozenset(KIND_WEIGHTS) | {"rating"}
"""Kinds that are interactions: popularity, the online fold-in and CF training read only these
(an impression, a skip or a dwell says what was shown or how long, not that the user chose it).
Training and popularity also skip events flagged ``unknown_item``."""
POSITIVE_KINDS = frozenset({"click", "add_to_cart", "purchase"})
"""Kinds that tell training the user liked the item (a rating does when it is high)."""
NEGATIVE_KINDS = frozenset({"impression", "skip"})
"""Search-log kinds that training reads as negatives (shown, not chosen; a clicked pair stays positive)."""
FEEDBACK_KINDS = frozenset(EVENT_KINDS) | NEGATIVE_KINDS
"""Every kind an exported training events file may hold."""
DWELL_CAP_S = 3600.0
"""The longest dwell stored, seconds (a tab left open is not an hour of interest)."""

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
        "event_id": {"type": "keyword"},
        "unknown_item": {"type": "boolean"},
    },
}
FUTURE_ALLOWANCE_S = 300.0
"""How far past now an event's timestamp may lie (clock skew); later ones are refused or expired."""


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
    event_id: str | None = None
    unknown_item: bool | None = None
    """True when the item was not in the catalog when the event arrived (stored, never trained on)."""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise InteractionError(f"event kind {self.kind!r} is not one of {EVENT_KINDS}", field="kind",
                                   item_id=self.item_id)
        problem = event_problem(self.kind, self.value, self.query_id, self.position)
        if problem is not None:
            raise InteractionError(problem[1], field=problem[0], item_id=self.item_id)
        if not is_pseudonym(self.user_key):
            raise InteractionError("event user_key is not a pseudonym: raw user ids are never stored",
                                   field="user_key", fix="pass privacy.pseudonymize(user_id, key)")
        if not self.item_id:
            raise InteractionError("event without item_id", field="item_id")

    def training_value(self) -> float:
        """The value this event contributes to collaborative training (0 for a kind that is not
        an interaction: impression, skip, dwell)."""
        return kind_value(self.kind, self.value)

    def as_doc(self) -> dict[str, object]:
        """The document written to the events index (``None`` fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def derived_id(self, timestamp: str | None = None) -> str:
        """A stable id: a hash over user key, item, kind, value, timestamp, query, position, session.

        ``timestamp`` replaces the event's own in the hash (the sidecar passes the arrival
        minute for events sent without a timestamp, so a retry within that minute matches).
        """
        parts: list[object] = [self.user_key, self.item_id, self.kind, float(self.value),
                               self.timestamp if timestamp is None else timestamp, self.query, self.position,
                               self.session_id]
        if self.query_id is not None:  # ids of events without one stay what they were
            parts.append(self.query_id)
        return "d-" + hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:40]


def event_problem(kind: str, value: float | None, query_id: str | None,
                  position: int | None) -> tuple[str, str] | None:
    """``(field, message)`` when an event of ``kind`` lacks what its kind needs, else ``None``:
    an impression needs ``query_id`` and ``position``; a position is 1-based; a dwell needs a
    positive ``value`` (seconds)."""
    if position is not None and position < 1:
        return "position", f"position must be >= 1 (the 1-based rank as shown), got {position}"
    if kind == "impression" and not query_id:
        return "query_id", "an impression needs the query_id of the response that showed the item"
    if kind == "impression" and position is None:
        return "position", "an impression needs the item's position (1-based rank as shown)"
    if kind == "dwell" and (value is None or not value > 0):
        return "value", "a dwell needs a positive value (seconds spent on the item)"
    return None


def kind_value(kind: str, value: float | None) -> float:
    """What one event contributes to collaborative training: the rating itself, the kind's
    weight times ``value``, or 0 for a kind that is not an interaction."""
    v = 1.0 if value is None else float(value)
    if kind == "rating":
        return v
    return KIND_WEIGHTS[kind] * v if kind in KIND_WEIGHTS else 0.0


@dataclass(frozen=True)
class WriteReport:
    """What :func:`write_events` did: new events stored, and events already stored (same id)."""

    written: int
    duplicates: int
    new: tuple[Event, ...] = ()
    """The events written by this call (not stored before)."""


def events_index(prefix: str) -> str:
    """Name of the events index for ``prefix``."""
    return f"{prefix}-events"


def ensure_events_index(client: OpenSearch, prefix: str) -> str:
    """Create ``<prefix>-events`` when missing, or add fields an older index lacks; returns its name."""
    name = events_index(prefix)
    if not client.indices.exists(index=name):
        try:
            client.indices.create(index=name, body={"settings": {"number_of_replicas": 0},
                                                    "mappings": EVENTS_MAPPING})
            return name
        except TransportError as e:
            if "resource_already_exists_exception" not in str(e):
                raise
    _add_missing_fields(client, name)
    return name


def _add_missing_fields(client: OpenSearch, name: str) -> None:
    """``put_mapping`` the fields of :data:`EVENTS_MAPPING` a strict index made earlier lacks."""
    props = EVENTS_MAPPING["properties"]
    assert isinstance(props, dict)
    have: set[str] = set()
    for body in client.indices.get_mapping(index=name).values():
        have |= set(body.get("mappings", {}).get("properties", {}))
    missing = {k: v for k, v in props.items() if k not in have}
    if missing:
        client.indices.put_mapping(index=name, body={"properties": missing})


def write_events(client: OpenSearch, prefix: str, events: Iterable[Event], refresh: bool | str = False,
                 policy: RetryPolicy = RetryPolicy()) -> WriteReport:
    """Store events once each: ``_id`` = ``event_id`` (or :meth:`Event.derived_id`), ``op_type: create``.

    An event whose id is already stored is counted in ``duplicates``, not written again, so a
    retried batch stores nothing twice. ``refresh``: False, True or ``"wait_for"``. ``policy``
    is the writer's by default; a request-time caller passes one without retries
    (``RetryPolicy(max_retries=0, ...)``) so that a node that is down fails the request at once.

    Raises:
        BulkError: some events were refused for another reason (the first reasons are named);
            ``context["retryable"]`` is true when every refusal was retryable (429, 5xx).
    """
    name = ensure_events_index(client, prefix)
    unique: dict[str, Event] = {}
    repeats = 0
    for e in events:
        eid = e.event_id or e.derived_id()
        repeats += eid in unique
        unique.setdefault(eid, e)
    actions = [{"_op_type": "create", "_index": name, "_id": eid, "_source": {**e.as_doc(), "event_id": eid}}
               for eid, e in unique.items()]
    report = bulk_write(client, actions, policy, refresh=refresh)
    stored = {k for k, why in report.failed.items() if "version_conflict_engine_exception" in why}
    refused = [(k, why) for k, why in report.failed.items() if k not in stored]
    refused += [(key, "not found") for key in report.missing]
    if refused:
        if all(k in report.retryable for k, _ in refused):  # busy or a shard unavailable: a retry may pass
            raise BulkError(f"{len(refused)} events not stored by {name} for now: {refused[:3]}", index=name,
                            retryable=True, fix="retry the same batch later (event ids make it idempotent)")
        raise BulkError(f"{len(refused)} events refused by {name}: {refused[:3]}", index=name,
                        fix="check the events' fields against the events mapping")
    new = tuple(e for eid, e in unique.items() if eid not in stored)
    return WriteReport(written=report.written, duplicates=repeats + len(stored), new=new)


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
    users = [{"term": {"user_key": user_key}}] if user_key else []
    query: dict[str, object] = {"query": interactions_query(users)}
    for hit in scan(client, index=events_index(prefix), query=query):
        src = hit["_source"]
        value = kind_value(src.get("kind", "click"), float(src.get("value", 1.0)))
        yield Interaction(src["user_key"], src["item_id"], value, event_epoch(src["timestamp"]))


def interactions_query(filters: Sequence[Mapping[str, object]] = (), known_only: bool = True) -> dict[str, object]:
    """The events that are interactions (:data:`INTERACTION_KINDS`), plus ``filters``; with
    ``known_only`` only those on items the catalog had when they arrived (what training reads;
    the online fold-in reads all: the CF model's own item factors decide what counts)."""
    must_not = [{"term": {"unknown_item": True}}] if known_only else []
    return {"bool": {"filter": [{"terms": {"kind": sorted(INTERACTION_KINDS)}}, *filters], "must_not": must_not}}


def scan_window(client: OpenSearch, index: str, prefix: str, since: str | None, until: str | None,
                tiebreak: str, filters: Sequence[Mapping[str, object]] = (),
                must_not: Sequence[Mapping[str, object]] = (), size: int = 1000) -> Iterator[dict[str, Any]]:
    """The ``_source`` of every document of ``index`` in the window ``[since, until)`` on
    ``timestamp`` (None = open), matching ``filters`` and none of ``must_not``, ordered by
    timestamp then ``tiebreak``; documents of users forgotten under ``prefix`` are left out.
    The events and the query log are read this way; nothing when the index does not exist."""
    if not client.indices.exists(index=index):
        return
    gone = forgotten_keys(client, prefix)
    window = [{"range": {"timestamp": {**({"gte": since} if since else {}), **({"lt": until} if until else {})}}}
              ] if since or until else []
    body = {"query": {"bool": {"filter": [*window, *filters], "must_not": list(must_not)}},
            "sort": [{"timestamp": "asc"}, {tiebreak: "asc"}]}
    for hit in scan(client, index=index, query=body, preserve_order=True, size=size):
        if hit["_source"].get("user_key") not in gone:
            yield hit["_source"]


def read_events(client: OpenSearch, prefix: str, since: str | None = None, until: str | None = None,
                kinds: Iterable[str] | None = None, include_unknown: bool = False) -> Iterator[dict[str, Any]]:
    """Stored events ordered by timestamp (then ``event_id``), forgotten users left out.

    Each is the stored document plus ``user_id`` (= its ``user_key``, the pseudonym), the shape
    of a training events file (``osreco.training.data``: impressions and skips are negatives).

    Args:
        since, until: ISO 8601 bounds (``since`` inclusive, ``until`` exclusive); None = open.
        kinds: only these kinds (default: all).
        include_unknown: also events whose item was not in the catalog when they arrived.

    Raises:
        InteractionError: an unknown kind in ``kinds``.
    """
    wanted = None if kinds is None else sorted(set(kinds))
    if wanted is not None and not set(wanted) <= set(EVENT_KINDS):
        raise InteractionError(f"kinds {wanted} are not all in {EVENT_KINDS}", field="kinds")
    filters = [] if wanted is None else [{"terms": {"kind": wanted}}]
    must_not = [] if include_unknown else [{"term": {"unknown_item": True}}]
    for src in scan_window(client, events_index(prefix), prefix, since, until, "event_id", filters, must_not):
        yield {**src, "user_id": src.get("user_key")}


def recent_events(client: OpenSearch, prefix: str, user_key: str, limit: int = 200) -> list[Interaction]:
    """The user's newest ``limit`` events, oldest first (input for an online fold-in)."""
    return recent_events_of(client, prefix, [user_key], limit)[user_key]


def recent_events_of(client: OpenSearch, prefix: str, user_keys: list[str],
                     limit: int = 200) -> dict[str, list[Interaction]]:
    """Each user's newest ``limit`` events, oldest first, read in one ``_msearch``."""
    if not user_keys:
        return {}
    lines: list[dict[str, object]] = []
    for key in user_keys:
        lines += [{"index": events_index(prefix), "ignore_unavailable": True},
                  {"size": limit, "query": interactions_query([{"term": {"user_key": key}}], known_only=False),
                   "sort": [{"timestamp": "desc"}]}]
    responses = client.msearch(body=lines)["responses"]
    out: dict[str, list[Interaction]] = {}
    for key, resp in zip(user_keys, responses):
        if "error" in resp:
            raise TransportError(int(resp.get("status", 500)), "msearch", resp["error"])
        rows = []
        for hit in reversed(resp["hits"]["hits"]):
            src = hit["_source"]
            value = kind_value(src.get("kind", "click"), float(src.get("value", 1.0)))
            rows.append(Interaction(src["user_key"], src["item_id"], value, event_epoch(src["timestamp"])))
        out[key] = rows
    return out


def expire_events(client: OpenSearch, prefix: str, days: float, now: datetime | None = None,
                  future_s: float = FUTURE_ALLOWANCE_S) -> int:
    """Delete events older than ``days`` (retention window), and events dated more than
    ``future_s`` seconds after now (they would sit forever among a user's newest); returns how many.

    Raises:
        ConfigError: ``days`` is not positive or ``future_s`` is negative.
    """
    if not days > 0:
        raise ConfigError("retention days must be > 0", field="retention_days")
    if not future_s >= 0:
        raise ConfigError("the future allowance must be >= 0 seconds", field="future_s")
    ref = now or datetime.now(timezone.utc)
    cutoff = (ref - timedelta(days=days)).isoformat()
    future = (ref + timedelta(seconds=future_s)).isoformat()
    name = events_index(prefix)
    if not client.indices.exists(index=name):
        return 0
    query = {"bool": {"should": [{"range": {"timestamp": {"lt": cutoff}}}, {"range": {"timestamp": {"gt": future}}}],
                      "minimum_should_match": 1}}
    res = client.delete_by_query(index=name, body={"query": query}, refresh=True, conflicts="proceed")
    return int(res.get("deleted", 0))


def event_epoch(value: object) -> float:
    """Epoch seconds of a stored event timestamp (ISO 8601, or epoch milliseconds)."""
    if isinstance(value, (int, float)):
        return float(value) / 1000.0  # epoch_millis, as the mapping stores numbers
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
