"""The users behind the requests: pseudonyms, taste vectors, events, forgetting.

A user id never reaches the node: it is pseudonymized (HMAC) first. A known user's taste
vector is the stored one (``<prefix>-users``, folded in online after new events) or the CF
model's trained one. ``forget`` is ``osreco.cf.forget.forget`` (every ``<prefix>-*`` index but
the items, a tombstone in ``<prefix>-forgotten``, the saved CF model when the sidecar may rewrite
it). Every request reads the user's document and the tombstone in one ``mget``, so every worker
stops personalizing a forgotten user at its next request, whichever worker handled the forget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
from opensearchpy import TransportError

from osreco.cf import events as ev_store
from osreco.cf import forget as cf_forget
from osreco.cf import store as cf_store
from osreco.cf.errors import InteractionError
from osreco.cf.priors import bump_popularity, event_delta, popularity_clock
from osreco.cf.privacy import PrivacyConfig, pseudonymize
from osreco.ingest.bulk import RetryPolicy, bulk_write
from osreco.ingest.errors import BulkError
from osreco.plugin import schemas
from osreco.plugin.config import SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.errors import NodeUnavailableError, UpstreamError
from osreco.plugin.foldin import FoldInQueue
from osreco.plugin.metrics import Metrics
from osreco.plugin.transport import NodeTransport

__all__ = ["UserContext", "Users"]

log = logging.getLogger("osreco.plugin")

RETRY_EVENTS_FIX = ("retry the same batch after Retry-After seconds; give each event an event_id (or a timestamp) "
                    "so that a retry in a later minute is not stored twice")


@dataclass(frozen=True)
class UserContext:
    """A known user: pseudonym, taste vector (may be None), recent history (oldest first) and
    every item they have seen as far as stored (``seen``, a superset of ``history``)."""

    key: str
    vector: np.ndarray | None
    history: tuple[str, ...]
    seen: tuple[str, ...] = ()

    @property
    def all_seen(self) -> tuple[str, ...]:
        """``seen`` when stored (users written before it existed: ``history``)."""
        return self.seen or self.history


class Users:
    """User context for a request, the CF model's item factors, events and forgetting.

    ``model_dir`` is the folder ``cf_model`` was loaded from (``from_config``), which ``forget``
    rewrites when this process may.

    Args:
        transport: the node.
        store: the users/events indexes (``<prefix>-users``, ``<prefix>-events``).
        hmac_key: the key that pseudonymizes user ids.
        metrics: the stage timings of ``/v1/events``.
        cf_model: the served CF model (``osreco.cf.model.CFModel``), or None.
        foldin_queue: most users waiting for their fold-in (:class:`~osreco.plugin.foldin.FoldInQueue`).
    """

    model_dir: str | None = None

    def __init__(self, transport: NodeTransport, store: cf_store.StoreConfig, hmac_key: str, metrics: Metrics,
                 cf_model: Any = None, foldin_queue: int = 10000):
        self.transport, self.store, self.hmac_key, self.metrics = transport, store, hmac_key, metrics
        self.cf_model = cf_model
        self._clock: tuple[float, float] | None = None
        self._clock_read_at = -1e9
        self.foldin = FoldInQueue(self._fold_batch, metrics, maxsize=foldin_queue,
                                  retry_after_s=max(1, transport.retry_after_s // 5))

    @classmethod
    def from_config(cls, config: SidecarConfig, transport: NodeTransport, metrics: Metrics,
                    cf_model: Any = None) -> Users:
        """Users over ``config``'s store; ``cf_model`` defaults to the one in ``cf_model_dir``.

        Raises:
            ConfigError: the CF model does not load.
        """
        model_dir = None
        if cf_model is None and config.cf_model_dir:
            from osreco.cf.model import CFModel

            cf_model, model_dir = CFModel.load(config.cf_model_dir), config.cf_model_dir
        store = cf_store.StoreConfig(prefix=config.prefix, item_index=config.alias)
        if cf_model is not None:
            try:  # a stale model file never serves a forgotten user; the per-request check backs this up
                gone = cf_forget.forgotten_keys(transport.client, store.prefix)
            except (TransportError, OSError):
                gone = set()
            if gone:
                cf_model = cf_model.without_user(*gone)
        users = cls(transport, store, config.effective_hmac_key, metrics, cf_model, config.foldin_queue)
        users.model_dir = model_dir
        return users

    def context(self, user_id: str | None, deg: Degradations) -> UserContext | None:
        """The user's pseudonym, vector and history; ``None`` for a forgotten user (tombstone) and
        (reported) when the store fails.

        The user's document and the tombstone come in one ``mget``; a tombstoned user is also
        dropped from the CF model held in memory.
        """
        if user_id is None:
            return None
        key = pseudonymize(user_id, self.hmac_key)
        try:
            doc, forgotten = cf_forget.user_and_tombstone(self.transport.client, self.store.users_index,
                                                          self.store.prefix, key)
        except (TransportError, OSError) as e:
            log.warning("user store read failed: %s", e)
            deg.add("user_store", "not personalized: the user store did not answer")
            return None
        if forgotten:
            self._drop_from_model(key)
            return None
        vector = np.asarray(doc["cf_vector"], dtype=np.float32) if doc and doc.get("cf_vector") else None
        if vector is None and self.cf_model is not None:
            vector = self.cf_model.user_vector(key)
        if vector is not None and not np.any(vector):
            vector = None
        history = doc.get("history") if doc else None
        seen = doc.get("seen") if doc else None
        return UserContext(key, vector, tuple(history) if isinstance(history, list) else (),
                           tuple(seen) if isinstance(seen, list) else ())

    def factors(self, item_ids: list[str]) -> dict[str, np.ndarray]:
        """The CF model's item factors of the items it knows (empty without a model)."""
        model = self.cf_model
        if model is None:
            return {}
        rows = {i: model.item_positions([i]) for i in item_ids}
        return {i: model.item_factors[r[0]] for i, r in rows.items() if r}

    def affinity(self, user: UserContext | None, item_ids: set[str]) -> dict[str, float]:
        """``user . item_factor`` for every item the CF model knows (empty without either)."""
        if user is None or user.vector is None or self.cf_model is None:
            return {}
        factors = self.factors(sorted(item_ids))
        return {i: float(np.dot(user.vector, v)) for i, v in factors.items()}

    def record_events(self, events: tuple[schemas.Event, ...]) -> dict[str, Any]:
        """Store a validated batch once (idempotent ids) and queue its users for the fold-in.

        The request only reserves room in the fold-in queue (429 + ``Retry-After``, nothing stored,
        when it is full), writes the events with ``op_type: create`` and no refresh, and commits;
        the background thread folds the users in and bumps popularity (:mod:`osreco.plugin.foldin`).
        An event without ``event_id`` gets a hash of its fields; one without a timestamp is stored
        at its arrival time and hashed with the arrival minute (a retry within that minute matches).

        A forget that lands between the tombstone check and the write is caught afterwards: the
        events just written for users tombstoned meanwhile are deleted by id and counted as forgotten.

        The answer counts ``accepted``, ``duplicates`` (same id, stored once, added to nothing),
        ``forgotten``, ``unknown_items`` (events whose item the catalog lacks: stored with
        ``unknown_item``, never added to popularity or CF training; one ``mget`` with the
        tombstones), ``out_of_order`` (new events older than their user's newest: accepted; readers
        order by timestamp) and ``queued_users``. Impressions, skips and dwells are stored but fold
        no one in and add no popularity (:data:`osreco.cf.events.INTERACTION_KINDS`).

        Raises:
            OverloadedError: the fold-in queue cannot take the batch's users.
            NodeUnavailableError: the node did not answer, or refused some events for now (429, 5xx).
            UpstreamError: the node refused some events for another reason (its text is only logged).
        """
        deg = Degradations(self.metrics)
        now = datetime.now(timezone.utc)
        arrival = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        minute = now.replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z")
        docs = []
        for e in events:
            doc = ev_store.Event(user_key=pseudonymize(e.user_id, self.hmac_key), item_id=e.item_id, kind=e.kind,
                                 timestamp=e.timestamp or arrival, value=1.0 if e.value is None else e.value,
                                 query=e.query, query_id=e.query_id, position=e.position, session_id=e.session_id,
                                 event_id=e.event_id)
            if doc.event_id is None:
                doc = replace(doc, event_id=doc.derived_id(None if e.timestamp else minute))
            docs.append(doc)
        # A forgotten user stays forgotten: their new events are dropped here, never stored; the
        # same mget tells which items the catalog lacks (stored, flagged, never trained on).
        gone, unknown = self.transport.call("events", check_batch, self.transport.client, self.store,
                                            [d.user_key for d in docs], [d.item_id for d in docs], deg)
        docs = [d if d.item_id not in unknown else replace(d, unknown_item=True) for d in docs
                if d.user_key not in gone]
        if not docs:
            return {"accepted": 0, "duplicates": 0, "forgotten": len(events), "queued_users": 0, "unknown_items": 0,
                    "out_of_order": 0, "degradations": deg.items}
        late_order = self.transport.call("events", out_of_order, self.transport.client, self.store.prefix, docs)
        users = [] if self.cf_model is None else list(dict.fromkeys(d.user_key for d in docs if _teaches(d)))
        if self.cf_model is None:
            deg.add("cf_model", "events stored; no CF model loaded, so users are not updated online")
        clock = self._popularity_clock()
        ticket = self.foldin.reserve(users, _popularity_deltas(docs, clock))
        try:
            with self.metrics.stage("/v1/events", "store"):
                # No retries inside a request: a node that is down answers 503 now, not after backoff.
                no_retry = RetryPolicy(max_retries=0, request_timeout_s=self.transport.request_timeout_s)
                report = self.transport.call("events", ev_store.write_events, self.transport.client,
                                             self.store.prefix, docs, policy=no_retry)
            late = self._drop_late_forgotten(docs)
        except BulkError as e:
            ticket.cancel()
            log.warning("events write refused: %s", e)
            if e.context.get("retryable"):
                raise NodeUnavailableError("OpenSearch could not store some events now (busy or a shard unavailable)",
                                           retry_after_s=self.transport.retry_after_s, fix=RETRY_EVENTS_FIX) from e
            raise UpstreamError("OpenSearch refused some events", fix="check the node's log and the events "
                                "index mapping; then retry the same batch") from e
        except BaseException:
            ticket.cancel()
            raise
        new = [d for d in report.new if d.user_key not in late]
        ticket.deltas = _popularity_deltas(new, clock)  # duplicates add no popularity
        ticket.keys = tuple(k for k in ticket.keys if k in {d.user_key for d in new if _teaches(d)})
        ticket.commit()
        kept = sum(d.user_key not in late for d in docs)
        return {"accepted": report.written - (len(report.new) - len(new)), "duplicates": report.duplicates,
                "forgotten": len(events) - kept, "queued_users": len(ticket.keys),
                "unknown_items": sum(bool(d.unknown_item) for d in docs if d.user_key not in late),
                "out_of_order": sum(d.event_id in late_order for d in new), "degradations": deg.items}

    def _drop_late_forgotten(self, docs: Sequence[ev_store.Event]) -> set[str]:
        """The users of ``docs`` tombstoned since the check before the write; their just-written
        events are deleted by id (a forget in between deleted first, then these were stored).

        Raises:
            BulkError: the node did not delete them (after the writer's retries).
        """
        late = self.transport.call("events", cf_forget.tombstoned, self.transport.client, self.store.prefix,
                                   [d.user_key for d in docs])
        if late:
            actions = [{"_op_type": "delete", "_index": self.store.events_index, "_id": d.event_id}
                       for d in docs if d.user_key in late]
            report = self.transport.call("events", bulk_write, self.transport.client, actions, RetryPolicy(),
                                         refresh=True)
            if report.failed:
                raise BulkError(f"events of a user forgotten meanwhile not deleted: {list(report.failed.values())[:2]}",
                                index=self.store.events_index, fix=RETRY_EVENTS_FIX)
        return late

    def _popularity_clock(self) -> tuple[float, float] | None:
        """The latest training's popularity reference time and half-life (read at most once a
        minute; ``None`` before a training wrote popularity or while the node does not answer)."""
        now = time.monotonic()
        if now - self._clock_read_at > 60.0:
            try:
                self._clock = popularity_clock(cf_store.read_meta(self.transport.client, self.store))
            except (TransportError, OSError) as e:
                log.warning("training metadata read failed: %s", e)
            self._clock_read_at = now
        return self._clock

    def _fold_batch(self, user_keys: list[str], deltas: dict[str, float]) -> None:
        """Background work of the fold-in queue: make the new events visible, fold the users in."""
        client = self.transport.client
        if user_keys:
            client.indices.refresh(index=self.store.events_index, ignore_unavailable=True)
            # a user forgotten after their events were queued is never written back
            gone = cf_forget.tombstoned(client, self.store.prefix, user_keys)
            keys = [k for k in user_keys if k not in gone]
            if self.cf_model is not None and keys:
                cf_store.refresh_user_vectors(client, self.store, self.cf_model, keys)
                # a forget that landed between the check and the write: remove what was written
                for key in cf_forget.tombstoned(client, self.store.prefix, keys):
                    client.delete(index=self.store.users_index, id=key, refresh=True, ignore=[404])
        if deltas:
            bump_popularity(client, self.store.item_index, deltas)

    def forget(self, user_id: str) -> dict[str, Any]:
        """Forget the user everywhere (see :func:`osreco.cf.forget.forget`) and in this worker's memory.

        The saved CF model is rewritten when this sidecar loaded it from a folder it may write;
        otherwise ``model_rewritten`` is false and the tombstone alone keeps every worker and every
        restart from using the user's trained vector. When the loaded folder cannot be rewritten,
        a WARNING is logged and ``model_note`` says which command rewrites it.
        """
        model_dir, note = self.model_dir, None
        if model_dir is not None:
            try:
                cf_forget.check_model_dir(model_dir)
            except InteractionError as e:
                log.warning("forget: the CF model in %s was not rewritten: %s", model_dir, e.message)
                note = (f"the saved CF model in {model_dir} cannot be rewritten by the sidecar; the tombstone keeps "
                        f"the user unserved; run `osreco users forget USER --index {self.store.prefix} "
                        f"--model-dir {model_dir}` where that folder is writable")
                model_dir = None
        try:
            report = self.transport.call("forget", cf_forget.forget, self.transport.client, self.store.prefix,
                                         user_id, PrivacyConfig(self.hmac_key.encode("utf-8")), model_dir)
        except BulkError as e:
            raise UpstreamError(f"forget did not complete: {e.message}", fix=cf_forget.RETRY_FIX) from e
        self.foldin.discard(report.user_key)
        in_memory = self._drop_from_model(report.user_key)
        users_deleted = report.deleted.get(self.store.users_index, 0)
        return {"user_id": user_id, "events_deleted": report.deleted.get(self.store.events_index, 0),
                "user_deleted": bool(users_deleted or in_memory or (report.model and report.model.removed)),
                "deleted": report.deleted, "tombstone": True,
                "model_rewritten": bool(report.model and report.model.removed),
                **({"model_note": note} if note else {})}

    def _drop_from_model(self, key: str) -> bool:
        """Drop ``key``'s trained vector from the CF model in memory; whether it was there."""
        model = self.cf_model
        if model is None or model.user_vector(key) is None:
            return False
        self.cf_model = model.without_user(key)
        return True


def _popularity_deltas(events: Sequence[ev_store.Event], clock: tuple[float, float] | None) -> dict[str, float]:
    """Per item, what the new events add to the stored popularity (each event counts once, decayed
    relative to the training's reference time: :func:`osreco.cf.priors.event_delta`); empty before
    a training wrote popularity. Only interactions (:func:`_teaches`) on items the catalog has count."""
    if clock is None:
        return {}
    ref, half_life = clock
    out: dict[str, float] = {}
    for e in events:
        if not _teaches(e) or e.unknown_item:
            continue
        out[e.item_id] = out.get(e.item_id, 0.0) + event_delta(ev_store.event_epoch(e.timestamp), ref, half_life)
    return out


def _teaches(event: ev_store.Event) -> bool:
    """Whether ``event`` changes the user's taste (the fold-in): an interaction
    (:data:`~osreco.cf.events.INTERACTION_KINDS`; not an impression, skip or dwell). The fold-in
    weighs only items the CF model knows; popularity also skips items the catalog lacks."""
    return event.kind in ev_store.INTERACTION_KINDS


def check_batch(client: Any, store: cf_store.StoreConfig, user_keys: Sequence[str], item_ids: Sequence[str],
                deg: Degradations) -> tuple[set[str], set[str]]:
    """The tombstoned users and the items missing from the catalog, in one ``mget``.

    An item index that cannot be read (missing alias, an error) flags no item: the events are
    stored as they are and the check is listed as a degradation.

    Raises:
        TransportError: the tombstone lookup failed.
    """
    keys, items = list(dict.fromkeys(user_keys)), list(dict.fromkeys(item_ids))
    docs = client.mget(body={"docs": [
        *({"_index": cf_forget.forgotten_index(store.prefix), "_id": k, "_source": False} for k in keys),
        *({"_index": store.item_index, "_id": i, "_source": False} for i in items)]})["docs"]
    gone: set[str] = set()
    for key, doc in zip(keys, docs[:len(keys)]):
        error = doc.get("error")
        if error and "index_not_found" not in str(error):
            raise TransportError(500, "mget failed", error)
        if doc.get("found"):
            gone.add(key)
    found = docs[len(keys):]
    if any(d.get("error") for d in found):
        deg.add("item_check", f"events stored without checking their items: {store.item_index} did not answer")
        return gone, set()
    return gone, {i for i, d in zip(items, found) if not d.get("found")}


def out_of_order(client: Any, prefix: str, events: Sequence[ev_store.Event]) -> set[str | None]:
    """The ``event_id`` of each of ``events`` older than its user's newest event: stored (as far
    as the index has refreshed) or earlier in the batch. One search (the newest timestamp per user)."""
    keys = list(dict.fromkeys(e.user_key for e in events))
    body = {"size": 0, "query": {"terms": {"user_key": keys}},
            "aggs": {"users": {"terms": {"field": "user_key", "size": len(keys)},
                               "aggs": {"newest": {"max": {"field": "timestamp"}}}}}}
    resp = client.search(index=ev_store.events_index(prefix), body=body, ignore_unavailable=True)
    buckets = ((resp.get("aggregations") or {}).get("users") or {}).get("buckets", [])
    newest = {b["key"]: float(b["newest"]["value"]) / 1000.0 for b in buckets if b["newest"].get("value") is not None}
    late: set[str | None] = set()
    for e in events:
        at = ev_store.event_epoch(e.timestamp)
        if at < newest.get(e.user_key, -1e18):
            late.add(e.event_id)
        newest[e.user_key] = max(at, newest.get(e.user_key, -1e18))
    return late
