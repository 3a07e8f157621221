"""Collaborative factors in OpenSearch: item ``cf_vector``, the users index, training metadata.

Indexes (``prefix`` is usually the item index alias):
  - the item index: ``cf_vector`` written by bulk *partial* updates (other fields untouched);
  - ``<prefix>-users``: ``user_key`` (pseudonym, also the ``_id``), ``cf_vector``, ``history``, ``updated_at``;
  - ``<prefix>-cf-meta``: one document per training run plus ``latest``.

Example:
    >>> store = StoreConfig(prefix="movies", item_index="movies")
    >>> write_item_factors(client, store, model.item_ids, model.item_factors)
    >>> read_user_vector(client, store, "u_9f...")
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from opensearchpy import NotFoundError, OpenSearch, TransportError
from opensearchpy.helpers import scan

from osreco.ingest.bulk import BulkReport, RetryPolicy, bulk_write
from osreco.ingest.errors import BulkError, ConfigError, IndexError_

if TYPE_CHECKING:
    from osreco.cf.model import CFModel

_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
Progress = Callable[[int], None]


@dataclass(frozen=True)
class StoreConfig:
    """Where collaborative data lives.

    Args:
        prefix: name prefix of the users, events and metadata indexes.
        item_index: the item index or its alias (holds ``cf_vector``).
        chunk_size: documents per bulk request.
        history_len: recent item ids kept per user (``history``: explanations, neighbours).
        seen_len: item ids kept per user in ``seen`` (what recommendations exclude).
    """

    prefix: str
    item_index: str
    chunk_size: int = 500
    history_len: int = 500
    seen_len: int = 20_000

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ConfigError(f"index prefix {self.prefix!r} must be lowercase letters, digits, '.', '_' or '-'",
                              field="prefix")
        if self.chunk_size < 1 or self.history_len < 1 or self.seen_len < self.history_len:
            raise ConfigError("chunk_size and history_len must be >= 1, seen_len >= history_len", field="chunk_size")

    @property
    def users_index(self) -> str:
        return f"{self.prefix}-users"

    @property
    def meta_index(self) -> str:
        return f"{self.prefix}-cf-meta"

    @property
    def events_index(self) -> str:
        return f"{self.prefix}-events"


SEEN_FIELD: dict[str, object] = {"type": "keyword", "index": False, "doc_values": False}
"""Every item a user has seen (up to ``seen_len``): kept in ``_source`` only, read by id."""
USERS_MAPPING: dict[str, object] = {
    "dynamic": "strict",
    "properties": {
        "user_key": {"type": "keyword"},
        "cf_vector": {"type": "float", "index": False, "doc_values": False},
        "history": {"type": "keyword"},
        "seen": SEEN_FIELD,
        "updated_at": {"type": "date"},
    },
}
META_MAPPING: dict[str, object] = {"dynamic": False, "properties": {"trained_at": {"type": "date"},
                                                                     "model": {"type": "keyword"}}}


def now_iso() -> str:
    """The current UTC time as ISO 8601 (seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def item_cf_dim(client: OpenSearch, index: str) -> int | None:
    """Dimension of the item index's ``cf_vector`` knn field, ``None`` when it has none.

    Raises:
        IndexError_: the index does not exist.
    """
    try:
        mappings = client.indices.get_mapping(index=index)
    except NotFoundError as e:
        raise IndexError_(f"item index {index!r} does not exist", index=index,
                          fix="create it with `osreco ingest` (or pass the right --index)") from e
    for body in mappings.values():
        prop = body.get("mappings", {}).get("properties", {}).get("cf_vector")
        if prop and prop.get("type") == "knn_vector":
            return int(prop["dimension"])
    return None


def indexed_item_ids(client: OpenSearch, index: str) -> set[str]:
    """Every ``_id`` in the item index (scroll, no source)."""
    return {hit["_id"] for hit in scan(client, index=index, query={"query": {"match_all": {}}}, _source=False)}


def read_item_embeddings(client: OpenSearch, index: str, field_name: str = "embedding") -> dict[str, np.ndarray]:
    """``{item_id: content embedding}`` for items that have one."""
    out: dict[str, np.ndarray] = {}
    query = {"query": {"exists": {"field": field_name}}}
    for hit in scan(client, index=index, query=query, _source=[field_name]):
        vec = hit.get("_source", {}).get(field_name)
        if vec:
            out[hit["_id"]] = np.asarray(vec, dtype=np.float32)
    return out


def write_item_factors(client: OpenSearch, store: StoreConfig, item_ids: Sequence[str], factors: np.ndarray,
                       progress: Progress | None = None) -> BulkReport:
    """Partial-update ``cf_vector`` on every item; items missing from the index are counted.

    Raises:
        IndexError_: the item index has no ``cf_vector`` field of the factors' dimension.
    """
    dim = item_cf_dim(client, store.item_index)
    if dim != factors.shape[1]:
        raise IndexError_(f"item index {store.item_index!r} has cf_vector dim {dim}, factors have {factors.shape[1]}",
                          index=store.item_index,
                          fix="create the index with IndexSpec(cf_dim=<factors>) or train with --factors <cf_dim>")
    actions = ({"_op_type": "update", "_index": store.item_index, "_id": str(i), "doc": {"cf_vector": _floats(v)}}
               for i, v in zip(item_ids, factors))
    report = _bulk(client, actions, store.chunk_size, progress)
    client.indices.refresh(index=store.item_index)
    return report


_USERS_CHECKED: set[str] = set()


def ensure_users_index(client: OpenSearch, store: StoreConfig) -> None:
    """Create ``<prefix>-users`` when missing, or add fields newer than it (``seen``); idempotent,
    checked once per process and index."""
    _ensure(client, store.users_index, USERS_MAPPING)
    if store.users_index not in _USERS_CHECKED:
        client.indices.put_mapping(index=store.users_index, body={"properties": {"seen": SEEN_FIELD}})
        _USERS_CHECKED.add(store.users_index)


def write_user_vectors(client: OpenSearch, store: StoreConfig, user_keys: Sequence[str], vectors: np.ndarray,
                       histories: dict[str, list[str]] | None = None, progress: Progress | None = None) -> BulkReport:
    """Index one document per user (``_id`` = user key)."""
    ensure_users_index(client, store)
    stamp = now_iso()
    histories = histories or {}
    actions = ({"_op_type": "index", "_index": store.users_index, "_id": key,
                "_source": {"user_key": key, "cf_vector": _floats(vec),
                            "history": histories.get(key, [])[-store.history_len:],
                            "seen": list(dict.fromkeys(histories.get(key, [])))[-store.seen_len:], "updated_at": stamp}}
               for key, vec in zip(user_keys, vectors))
    report = _bulk(client, actions, store.chunk_size, progress)
    client.indices.refresh(index=store.users_index)
    return report


def merge_seen(older: Sequence[str], newer: Sequence[str], limit: int) -> list[str]:
    """Every item of ``older`` then ``newer`` once (a re-seen item moves to the end), the last ``limit``."""
    recent = set(newer)
    merged = dict.fromkeys(i for i in older if i not in recent)
    merged.update(dict.fromkeys(newer))
    return list(merged)[-limit:]


def read_user(client: OpenSearch, store: StoreConfig, user_key: str) -> dict[str, Any] | None:
    """The users-index document of ``user_key`` or ``None``."""
    try:
        return client.get(index=store.users_index, id=user_key)["_source"]
    except NotFoundError:
        return None


def read_user_vector(client: OpenSearch, store: StoreConfig, user_key: str) -> np.ndarray | None:
    """The stored ``cf_vector`` of ``user_key`` (float32) or ``None`` when unknown."""
    doc = read_user(client, store, user_key)
    vec = doc.get("cf_vector") if doc else None
    return np.asarray(vec, dtype=np.float32) if vec else None


def write_meta(client: OpenSearch, store: StoreConfig, meta: dict[str, object]) -> str:
    """Store training metadata as a run document and as ``latest``; returns the run id."""
    _ensure(client, store.meta_index, META_MAPPING)
    run_id = f"run-{int(time.time() * 1000)}"
    doc = {**meta, "run_id": run_id, "trained_at": now_iso(), "item_index": store.item_index}
    client.index(index=store.meta_index, id=run_id, body=doc)
    client.index(index=store.meta_index, id="latest", body=doc, refresh=True)
    return run_id


def read_meta(client: OpenSearch, store: StoreConfig) -> dict[str, object] | None:
    """The ``latest`` training metadata, or ``None`` before the first training."""
    try:
        return client.get(index=store.meta_index, id="latest")["_source"]
    except NotFoundError:
        return None


def _ensure(client: OpenSearch, index: str, mappings: dict[str, object]) -> None:
    if client.indices.exists(index=index):
        return
    try:
        client.indices.create(index=index, body={"settings": {"number_of_replicas": 0}, "mappings": mappings})
    except TransportError as e:  # created by a concurrent writer in between: fine
        if "resource_already_exists_exception" not in str(e):
            raise IndexError_(f"cannot create index {index!r}: {e}", index=index) from e


def _bulk(client: OpenSearch, actions: Iterable[Mapping[str, object]], chunk_size: int,
          progress: Progress | None) -> BulkReport:
    """The shared bulk write (the writer's retry policy); a 404 (item not in the index) is 'missing'.

    Raises:
        BulkError: the node stayed unreachable or refused a request for good.
    """
    return bulk_write(client, actions, RetryPolicy(), chunk_size=chunk_size, progress=progress)


def _floats(vec: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(vec, dtype=np.float32)]


def refresh_user_vector(client: OpenSearch, store: StoreConfig, model: CFModel, user_key: str,
                        limit: int = 200) -> np.ndarray:
    """Online update of one user (:func:`refresh_user_vectors`), searchable at once.

    Returns:
        The new vector (zeros when none of the items is known to the model, or the user has
        neither a stored document nor events).
    """
    vectors = refresh_user_vectors(client, store, model, [user_key], limit, refresh=True)
    return vectors.get(user_key, np.zeros(model.dim, dtype=np.float32))


def refresh_user_vectors(client: OpenSearch, store: StoreConfig, model: CFModel, user_keys: Sequence[str],
                         limit: int = 200, refresh: bool = False) -> dict[str, np.ndarray]:
    """Online update after events: fold in each user's history plus recent events and store the
    vectors, with one ``mget``, one ``_msearch`` and one bulk write.

    The stored ``history`` (from training or earlier updates) counts 1 per item; the newest
    ``limit`` events count with their kind-weighted values and replace history entries of the
    same items, so a long-known user is not reduced to their last few clicks. ``seen`` keeps
    every item. A user with neither a stored document nor events (forgotten meanwhile) is
    skipped, so a late fold-in never writes a user back.

    Args:
        model: the loaded :class:`~osreco.cf.model.CFModel` (item factors stay fixed).
        limit: newest events used per user.
        refresh: make the users searchable before returning.

    Returns:
        ``{user key: new vector}`` of the users written.

    Raises:
        BulkError: the bulk write failed or refused some users.
    """
    from osreco.cf.events import recent_events_of

    keys = list(dict.fromkeys(user_keys))
    if not keys:
        return {}
    ensure_users_index(client, store)
    docs = {d["_id"]: d.get("_source") for d in client.mget(index=store.users_index, body={"ids": keys})["docs"]
            if d.get("found")}
    events = recent_events_of(client, store.prefix, keys, limit)
    stamp = now_iso()
    actions, vectors = [], {}
    for key in keys:
        doc, recent_rows = docs.get(key), events.get(key, [])
        if doc is None and not recent_rows:
            continue
        recent = {e.item_id for e in recent_rows}
        past = [i for i in (doc.get("history") or [] if doc else []) if i not in recent]
        items = past + [e.item_id for e in recent_rows]
        vector = vectors[key] = model.fold_in(items, [1.0] * len(past) + [e.value for e in recent_rows])
        actions.append({"_op_type": "index", "_index": store.users_index, "_id": key,
                        "_source": {"user_key": key, "cf_vector": _floats(vector),
                                    "history": list(dict.fromkeys(items))[-store.history_len:],
                                    "seen": merge_seen((doc.get("seen") or []) if doc else [], items, store.seen_len),
                                    "updated_at": stamp}})
    report = bulk_write(client, actions, RetryPolicy(max_retries=2), chunk_size=store.chunk_size)
    if report.failed or report.missing:
        raise BulkError(f"{len(report.failed) + len(report.missing)} user vectors refused by {store.users_index}: "
                        f"{list(report.failed.items())[:3]}", index=store.users_index)
    if refresh and actions:
        client.indices.refresh(index=store.users_index)
    return vectors
