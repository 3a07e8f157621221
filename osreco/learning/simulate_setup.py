"""The day-0 stores of ``osreco simulate``: the history events, index copies, the query-log wait."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def seed_history(client: Any, prefix: str, train: Sequence[Any]) -> int:
    """The day-0 training ratings as the events index's history, so a full retrain sees them.

    Timestamps are shifted (order kept) so that the newest one lies a day before now: the
    time-decayed popularity then weighs old and new traffic as a live system would.

    Returns:
        How many rating events were written.
    """
    from datetime import datetime, timezone

    from osreco.cf.events import Event, write_events
    from osreco.cf.privacy import pseudonymize
    from osreco.plugin.config import DEV_HMAC_KEY

    if not train:
        return 0
    shift = time.time() - 86400.0 - max(float(e.timestamp) for e in train)
    keys: dict[str, str] = {}
    events = [Event(keys.setdefault(e.user_id, pseudonymize(e.user_id, DEV_HMAC_KEY)), e.item_id, "rating",
                    datetime.fromtimestamp(float(e.timestamp) + shift, timezone.utc).isoformat().replace(
                        "+00:00", "Z"), value=float(e.value)) for e in train]
    return write_events(client, prefix, events, refresh=True).written


def settle(client: Any, alias: str, pages: int, timeout_s: float = 60.0) -> int:
    """Wait until the sidecar's background writer has logged ``pages`` requests of ``alias`` (or timeout).

    Returns:
        The requests logged (fewer than ``pages`` when the writer dropped some).
    """
    index, logged, deadline = f"{alias}-queries", 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.indices.exists(index=index):
            client.indices.refresh(index=f"{index},{alias}-events", ignore_unavailable=True)
            logged = int(client.count(index=index)["count"])
            if logged >= pages:
                break
        time.sleep(0.5)
    return logged


def copy_item_index(client: Any, encoder: Any, source: str, alias: str, cf_dim: int) -> str:
    """A new version of ``alias``: a copy of the item index behind ``source`` (reindexed, not re-encoded).

    Returns:
        The index now behind ``alias`` (older versions are deleted).
    """
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import RebuildConfig, rebuild_index
    from osreco.ingest.writer import IngestReport

    spec = IndexSpec.from_encoder(encoder, alias=alias, cf_dim=cf_dim)

    def load(name: str) -> IngestReport:
        done = client.reindex(body={"source": {"index": source}, "dest": {"index": name}}, refresh=True,
                              request_timeout=600)
        return IngestReport(index=name, rows_read=int(done.get("total", 0)), indexed=int(done.get("created", 0)))

    return str(rebuild_index(client, spec, load, RebuildConfig(delete_old=True, grace_s=0.0)).index)


def clone_index(client: Any, source: str, dest: str) -> None:
    """``dest`` (deleted first) with ``source``'s mapping, shard settings and documents."""
    client.indices.delete(index=dest, ignore_unavailable=True)
    if not client.indices.exists(index=source):
        return
    info = client.indices.get(index=source)[source]
    settings = {k: v for k, v in info["settings"]["index"].items() if k in ("number_of_shards",
                                                                          "number_of_replicas", "knn")}
    client.indices.create(index=dest, body={"mappings": info["mappings"], "settings": {"index": settings}})
    client.reindex(body={"source": {"index": source}, "dest": {"index": dest}}, refresh=True, request_timeout=600)
