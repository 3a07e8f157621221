"""The users behind the requests: pseudonyms, taste vectors, events, forgetting.

A user id never reaches the node: it is pseudonymized (HMAC) first. A known user's taste
vector is the stored one (``<prefix>-users``, folded in online after new events) or the CF
model's trained one. ``forget`` touches only ``<prefix>-users`` and ``<prefix>-events``, never
the item index, and drops the trained vector held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from opensearchpy import TransportError

from osreco.cf import events as ev_store
from osreco.cf import store as cf_store
from osreco.cf.privacy import pseudonymize
from osreco.ingest.bulk import RetryPolicy
from osreco.plugin import schemas
from osreco.plugin.config import SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.metrics import Metrics
from osreco.plugin.transport import NodeTransport

__all__ = ["UserContext", "Users"]


@dataclass(frozen=True)
class UserContext:
    """A known user: pseudonym, taste vector (may be None) and recent history (oldest first)."""

    key: str
    vector: np.ndarray | None
    history: tuple[str, ...]


class Users:
    """User context for a request, the CF model's item factors, events and forgetting.

    Args:
        transport: the node.
        store: the users/events indexes (``<prefix>-users``, ``<prefix>-events``).
        hmac_key: the key that pseudonymizes user ids.
        metrics: the stage timings of ``/v1/events``.
        cf_model: the served CF model (``osreco.cf.model.CFModel``), or None.
    """

    def __init__(self, transport: NodeTransport, store: cf_store.StoreConfig, hmac_key: str, metrics: Metrics,
                 cf_model: Any = None):
        self.transport, self.store, self.hmac_key, self.metrics = transport, store, hmac_key, metrics
        self.cf_model = cf_model

    @classmethod
    def from_config(cls, config: SidecarConfig, transport: NodeTransport, metrics: Metrics,
                    cf_model: Any = None) -> Users:
        """Users over ``config``'s store; ``cf_model`` defaults to the one in ``cf_model_dir``.

        Raises:
            ConfigError: the CF model does not load.
        """
        if cf_model is None and config.cf_model_dir:
            from osreco.cf.model import CFModel

            cf_model = CFModel.load(config.cf_model_dir)
        store = cf_store.StoreConfig(prefix=config.prefix, item_index=config.alias)
        return cls(transport, store, config.effective_hmac_key, metrics, cf_model)

    def context(self, user_id: str | None, deg: Degradations) -> UserContext | None:
        """The user's pseudonym, vector and history; ``None`` (reported) when the store fails."""
        if user_id is None:
            return None
        key = pseudonymize(user_id, self.hmac_key)
        try:
            doc = cf_store.read_user(self.transport.client, self.store, key)
        except (TransportError, OSError) as e:
            deg.add("user_store", f"not personalized: the user store failed: {type(e).__name__}: {e}")
            return None
        vector = np.asarray(doc["cf_vector"], dtype=np.float32) if doc and doc.get("cf_vector") else None
        if vector is None and self.cf_model is not None:
            vector = self.cf_model.user_vector(key)
        if vector is not None and not np.any(vector):
            vector = None
        history = doc.get("history") if doc else None
        return UserContext(key, vector, tuple(history) if isinstance(history, list) else ())

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
        """Store events (pseudonymized) and fold the users in online so the next request sees them."""
        deg = Degradations(self.metrics)
        docs = [ev_store.Event(user_key=pseudonymize(e.user_id, self.hmac_key), item_id=e.item_id, kind=e.kind,
                               timestamp=event_time(e.timestamp),
                               value=1.0 if e.value is None else e.value, query=e.query,
                               position=e.position, session_id=e.session_id) for e in events]
        client = self.transport.client
        with self.metrics.stage("/v1/events", "store"):
            # No retries inside a request: a node that is down answers 503 now, not after backoff.
            no_retry = RetryPolicy(max_retries=0, request_timeout_s=self.transport.request_timeout_s)
            self.transport.call("events", ev_store.write_events, client, self.store.prefix, docs,
                                refresh="wait_for", policy=no_retry)
        updated = 0
        if self.cf_model is None:
            deg.add("cf_model", "events stored; no CF model loaded, so users are not updated online")
        else:
            for user_key in dict.fromkeys(d.user_key for d in docs):
                self.transport.call("fold-in", cf_store.refresh_user_vector, client, self.store, self.cf_model,
                                    user_key)
                updated += 1
        return {"accepted": len(docs), "users_updated": updated, "degradations": deg.items}

    def forget(self, user_id: str) -> dict[str, Any]:
        """Delete the user's events and stored vector, and drop the trained vector in memory."""
        key = pseudonymize(user_id, self.hmac_key)
        client = self.transport.client
        res = self.transport.call("forget", client.delete_by_query, index=self.store.events_index,
                                  body={"query": {"term": {"user_key": key}}}, refresh=True, conflicts="proceed",
                                  ignore_unavailable=True)
        gone = self.transport.call("forget", client.delete, index=self.store.users_index, id=key, refresh=True,
                                   ignore=[404])
        user_deleted = gone.get("result") == "deleted"
        if self.cf_model is not None and self.cf_model.user_vector(key) is not None:
            self.cf_model = self.cf_model.without_user(key)
            user_deleted = True
        return {"user_id": user_id, "events_deleted": int(res.get("deleted", 0)), "user_deleted": user_deleted}


def event_time(value: str | float | None) -> str:
    """ISO 8601 UTC for an event time (now when absent; epoch seconds or ISO accepted)."""
    if value is None:
        return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    if isinstance(value, float):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))  # validated by schemas
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).isoformat()
