"""Online fold-in off the request thread: a bounded, deduplicated per-process queue of users.

``POST /v1/events`` only *reserves* room for its users (:meth:`FoldInQueue.reserve`), stores the
events, then commits the reservation; a background daemon thread drains the queue in batches:
it refreshes the events index once (so the events just written are visible), folds every
queued user in with one ``mget``, one ``_msearch`` and one bulk write
(:func:`osreco.cf.store.refresh_user_vectors`), and bumps the items' popularity with the
batch's kind weights (:func:`osreco.cf.priors.bump_popularity`). When the queue cannot take a
batch's users the request is refused with 429 before anything is stored.

The thread starts lazily, on the first reservation in the process that serves it, so under
gunicorn each worker gets its own (none runs in the master, and a forked worker never inherits
a dead one). Errors in the background are logged and counted
(``osreco_foldin_total{result="failed"}``); they never stop the thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from osreco.plugin.background import BatchWorker
from osreco.plugin.errors import OverloadedError
from osreco.plugin.metrics import Metrics

__all__ = ["FoldInQueue", "Reservation"]

log = logging.getLogger("osreco.plugin.foldin")
FoldBatch = Callable[[list[str], dict[str, float]], None]
"""Folds in these users and adds these per-item popularity deltas (the background work)."""


@dataclass
class Reservation:
    """Room held in the queue for one request's users; :meth:`commit` after the events are stored."""

    queue: FoldInQueue
    keys: tuple[str, ...]
    deltas: dict[str, float]
    size: int
    done: bool = False

    def commit(self) -> None:
        """Queue the users (and popularity deltas) for the background thread."""
        self.queue._settle(self, commit=True)

    def cancel(self) -> None:
        """Give the room back (the events were not stored)."""
        self.queue._settle(self, commit=False)


class FoldInQueue(BatchWorker):
    """A bounded per-process queue of user keys drained by one background thread.

    Args:
        fold: the background work for one batch (users, item deltas).
        metrics: counts folded and failed users (``osreco_foldin_total``).
        maxsize: most users (and most items with pending popularity) waiting at once.
        batch_size: most users folded per background batch.
        retry_after_s: ``Retry-After`` of the 429 when the queue is full.
    """

    thread_name = "osreco-foldin"

    def __init__(self, fold: FoldBatch, metrics: Metrics, maxsize: int = 10000, batch_size: int = 500,
                 retry_after_s: int = 1):
        self.fold, self.metrics = fold, metrics
        self.maxsize, self.batch_size, self.retry_after_s = maxsize, batch_size, retry_after_s
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._pending: dict[str, None] = {}
        self._deltas: dict[str, float] = {}
        self._reserved = 0

    def reserve(self, user_keys: Iterable[str], deltas: Mapping[str, float] | None = None) -> Reservation:
        """Hold room for ``user_keys`` (users already queued need none).

        Raises:
            OverloadedError: the queue cannot take them now (429 + ``Retry-After``).
        """
        self._ensure_started()
        keys = tuple(dict.fromkeys(user_keys))
        with self._cond:
            size = sum(k not in self._pending for k in keys)
            new_items = sum(i not in self._deltas for i in deltas or {})
            full = self._reserved + len(self._pending) + size > self.maxsize
            if full or len(self._deltas) + new_items > self.maxsize:
                self.metrics.foldin.labels("refused").inc(len(keys))
                raise OverloadedError(
                    f"the fold-in queue is full ({len(self._pending)} users waiting); nothing was stored",
                    retry_after_s=self.retry_after_s,
                    fix="retry after the Retry-After seconds, or send fewer users; give each event an event_id "
                        "(or a timestamp) so that a retry in a later minute is not stored twice")
            self._reserved += size
        return Reservation(self, keys, dict(deltas or {}), size)

    def _settle(self, res: Reservation, commit: bool) -> None:
        with self._cond:
            if res.done:
                return
            res.done = True
            self._reserved -= res.size
            if commit:
                for key in res.keys:
                    self._pending[key] = None
                for item, d in res.deltas.items():
                    self._deltas[item] = self._deltas.get(item, 0.0) + d
                self._cond.notify_all()

    def discard(self, user_key: str) -> bool:
        """Drop a queued user (forget): whether they were waiting. A batch already being folded
        checks the tombstone itself."""
        with self._cond:
            if user_key not in self._pending:
                return False
            del self._pending[user_key]
            return True

    def pending(self) -> int:
        """Users waiting (not counting a batch in progress)."""
        with self._cond:
            return len(self._pending)

    def _has_work(self) -> bool:
        return bool(self._pending or self._deltas)

    def _take(self) -> tuple[list[str], dict[str, float]]:
        keys = list(self._pending)[: self.batch_size]
        for key in keys:
            del self._pending[key]
        deltas, self._deltas = self._deltas, {}
        return keys, deltas

    def _process(self, batch: tuple[list[str], dict[str, float]]) -> None:
        keys, deltas = batch
        self.fold(keys, deltas)
        self.metrics.foldin.labels("folded").inc(len(keys))

    def _failed(self, batch: tuple[list[str], dict[str, float]]) -> None:
        log.exception("fold-in of %d users failed", len(batch[0]))
        self.metrics.foldin.labels("failed").inc(max(len(batch[0]), 1))
