"""The query log's write path in the sidecar: served candidates -> log entries, and a bounded,
per-process background writer that never blocks a request.

A request builds its response first, then hands one document to :meth:`QueryLogWriter.submit`
(a request that fails submits nothing). ``submit`` only appends to a bounded in-memory queue;
when the queue is full the document is dropped and counted
(``osreco_query_log_total{result="dropped"}``). A daemon thread, started lazily in the process
that serves (so each gunicorn worker has its own, as in :mod:`osreco.plugin.foldin`), writes
the queue in bulk batches (:func:`osreco.cf.querylog.write_queries`); a failed batch is logged
and counted (``result="failed"``) and never stops the thread.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from osreco.cf.querylog import SERVED_MIN, SIGNALS, new_query_id, query_doc
from osreco.plugin.background import BatchWorker
from osreco.plugin.explore import explore_order, page_seed
from osreco.plugin.fusion import Candidate, FusionSettings
from osreco.plugin.metrics import Metrics

__all__ = ["QueryLogWriter", "fusion_weights", "served_entries"]

log = logging.getLogger("osreco.plugin.querylog")
WriteBatch = Callable[[list[dict[str, Any]]], object]
"""Stores one batch of query-log documents (the background work)."""
SIGNAL_NAMES = {"cf": "taste", "als": "taste"}
"""Retrieval list names as the log calls them (the taste kNN and ALS are ``taste``)."""


def served_entries(ranked: Sequence[Candidate], shown: int, moved: Mapping[int, int] | None = None
                   ) -> list[dict[str, Any]]:
    """The log's ``served`` list: the first ``max(SERVED_MIN, shown)`` candidates of ``ranked``
    (the fused order; position 1-based, absolute), each with its per-signal 1-based ranks.

    ``moved``: fused rank -> the position exploration showed it at (:mod:`osreco.plugin.explore`);
    such an entry's ``position`` is where it was shown and its ``ranked`` the fused rank."""
    out = []
    for rank, c in enumerate(ranked[:max(SERVED_MIN, shown)], 1):
        position = (moved or {}).get(rank, rank)
        signals: dict[str, int | None] = dict.fromkeys(SIGNALS)
        for name, signal_rank in c.ranks.items():
            if name != "history":
                signals[SIGNAL_NAMES.get(name, name)] = int(signal_rank)
        out.append({"item_id": c.item_id, "position": position, "score": round(float(c.score), 6),
                    "signals": signals, **({"ranked": rank} if position != rank else {})})
    return out


def fusion_weights(settings: FusionSettings) -> dict[str, Any]:
    """The weights a search was fused with, named as the log's signals."""
    return {"method": settings.method, "bm25": settings.bm25_weight, "dense": settings.dense_weight,
            "taste": settings.cf_weight, "popularity": settings.popularity_weight,
            "neighbors": settings.neighbors_weight, "rrf_k": settings.rrf_k, "cf_mode": settings.cf_mode}


class QueryLogWriter(BatchWorker):
    """A bounded per-process queue of query-log documents drained by one background thread.

    Args:
        write: stores one batch (``osreco.cf.querylog.write_queries`` over the node).
        metrics: counts written, dropped and failed documents (``osreco_query_log_total``).
        maxsize: most documents waiting at once; more are dropped (0 = the log is off).
        batch_size: most documents per bulk write.
        explore: share of pages whose results get random adjacent swaps (``OSRECO_EXPLORE_FRACTION``).
    """

    thread_name = "osreco-querylog"

    def __init__(self, write: WriteBatch, metrics: Metrics, maxsize: int = 1000, batch_size: int = 200,
                 explore: float = 0.0):
        self.write, self.metrics, self.maxsize, self.batch_size = write, metrics, maxsize, batch_size
        self.explore = explore
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._queue: deque[dict[str, Any]] = deque()

    @property
    def enabled(self) -> bool:
        """Whether documents are kept at all (``maxsize > 0``)."""
        return self.maxsize > 0

    def submit(self, doc: Mapping[str, Any]) -> bool:
        """Queue one document; False (counted as dropped) when the queue is full or the log is off."""
        if not self.enabled:
            return False
        self._ensure_started()
        with self._cond:
            if len(self._queue) >= self.maxsize:
                self.metrics.query_log.labels("dropped").inc()
                return False
            self._queue.append(dict(doc))
            self._cond.notify_all()
        return True

    def record(self, resp: dict[str, Any], endpoint: str, ranked: Sequence[Candidate], fusion: Mapping[str, Any],
               **fields: Any) -> dict[str, Any]:
        """Finish a built response: a fresh ``query_id``, the page explored when it is drawn for it
        (:mod:`osreco.plugin.explore`, seeded by the request's ``fields``: results re-ordered, ranks
        renumbered), each result's ``position`` (its 1-based absolute rank as shown), then queue its
        log document (``ranked``: the fused candidates in ranked order; ``fields``:
        :func:`osreco.cf.querylog.query_doc`'s keyword fields). Returns ``resp``."""
        query_id = new_query_id()
        resp["query_id"] = query_id
        results = resp.get("results", [])
        order = explore_order(page_seed(endpoint, **fields), len(results), self.explore)
        moved: dict[int, int] = {}
        if order != sorted(order):
            ranks = [int(r["rank"]) for r in results]
            results[:] = [results[i] for i in order]
            for rank, r in zip(ranks, results):
                if int(r["rank"]) != rank:
                    moved[int(r["rank"])] = rank
                r["rank"] = rank
        for r in results:
            r["position"] = r["rank"]
        if self.enabled:
            shown = max((int(r["rank"]) for r in results), default=0)
            self.submit(query_doc(query_id, endpoint, _now_ms(), served_entries(ranked, shown, moved), fusion,
                                  **fields))
        return resp

    def pending(self) -> int:
        """Documents waiting (not counting a batch being written)."""
        with self._cond:
            return len(self._queue)

    def _has_work(self) -> bool:
        return bool(self._queue)

    def _take(self) -> list[dict[str, Any]]:
        return [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]

    def _process(self, batch: list[dict[str, Any]]) -> None:
        self.write(batch)
        self.metrics.query_log.labels("written").inc(len(batch))

    def _failed(self, batch: list[dict[str, Any]]) -> None:
        log.exception("query log: %d documents not written", len(batch))
        self.metrics.query_log.labels("failed").inc(len(batch))


def _now_ms() -> str:
    """Now, ISO 8601 UTC with milliseconds (``...Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
