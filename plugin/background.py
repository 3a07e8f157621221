"""One background thread per process that drains batches of queued work: the mechanism under
the fold-in queue (:mod:`osreco.plugin.foldin`) and the query-log writer
(:mod:`osreco.plugin.querylog_writer`).

A subclass keeps its own queue under :attr:`BatchWorker._cond` and says when there is work
(:meth:`_has_work`), takes a batch under the lock (:meth:`_take`), processes it outside the lock
(:meth:`_process`) and counts a failure (:meth:`_failed`). The thread is started on first use
and again in a forked child (a gunicorn worker does not inherit its parent's thread or lock); it
runs at a lower CPU priority, survives any failure of a batch, and :meth:`drain` waits until the
queue is empty and no batch is in progress.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

__all__ = ["BatchWorker", "lower_priority"]


class BatchWorker:
    """The thread, its condition variable and ``drain`` (see the module docstring)."""

    thread_name = "osreco-batches"

    def _reset(self) -> None:
        """Fresh lock and no thread (at construction, and in a forked child); a subclass also
        resets its queue here."""
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    def _ensure_started(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's thread and lock are not ours
            self._reset()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def _has_work(self) -> bool:
        """Whether a batch is waiting (called under the lock)."""
        raise NotImplementedError

    def _take(self) -> Any:
        """Remove and return the next batch (called under the lock)."""
        raise NotImplementedError

    def _process(self, batch: Any) -> None:
        """Do the batch's work (outside the lock)."""
        raise NotImplementedError

    def _failed(self, batch: Any) -> None:
        """Log and count a batch whose :meth:`_process` raised."""
        raise NotImplementedError

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the queue is empty and no batch is in progress; False when ``timeout``
        passed first (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._has_work() or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._cond:
                while not self._has_work():
                    self._cond.wait()
                batch = self._take()
                self._busy = True
            try:
                self._process(batch)
            except Exception:  # the thread must outlive any failure of the node or the model
                self._failed(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def lower_priority() -> None:
    """Give the calling thread a lower CPU priority (Linux schedules threads as tasks), so request
    threads and a node on the same cores go first; a no-op where that is not possible."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted
        pass
