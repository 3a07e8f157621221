"""Prometheus metrics of one app: latency per endpoint and per stage, degradations, errors.

Each app gets its own ``CollectorRegistry`` so several apps (tests, benchmarks) never
collide in the global registry.

Under several gunicorn workers each worker counts only its own requests, so ``/metrics``
uses prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` was set before
prometheus_client was imported (``osreco.plugin.gunicorn_conf`` sets it before workers
fork): every worker writes its values to files there and a scrape sums them
(``MultiProcessCollector``). Single-process servers (``osreco serve``, the Flask test
client) render their own registry, as before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of the multiprocess values when that mode is on in this process, else ``None``.

    The mode is fixed when prometheus_client is imported (it reads the variable then), so a
    variable set later does not switch it on.
    """
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and getattr(values.ValueClass, "_multiprocess", False) else None

STAGES = ("parse", "embed", "search", "fuse", "rerank", "explain", "store")
_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The sidecar's collectors, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "osreco_request_seconds", "Request latency per endpoint", ["endpoint", "status"],
            registry=self.registry, buckets=_BUCKETS)
        self.stage_seconds = Histogram(
            "osreco_stage_seconds", "Latency per stage of a request", ["endpoint", "stage"],
            registry=self.registry, buckets=_BUCKETS)
        self.degradations = Counter(
            "osreco_degradations", "Requests served in a degraded mode", ["kind"],
            registry=self.registry)
        self.errors = Counter(
            "osreco_errors", "Requests that ended in an error", ["endpoint", "code"],
            registry=self.registry)
        self.shard_failures = Counter(
            "osreco_search_partial", "Searches with timed_out or failed shards", ["reason"],
            registry=self.registry)
        self.bundle_reloads = Counter(
            "osreco_bundle_reloads", "Hot-reload checks that found a new bundle, by outcome "
            "(loaded, missing, failed)", ["result"], registry=self.registry)
        self.bundle_info = Gauge(
            "osreco_bundle_info", "The bundle being served (1 for its artifact_id; under several "
            "workers 1 while any live worker serves it)", ["artifact_id"],
            registry=self.registry, multiprocess_mode="livemax")
        self.reranked = Histogram(
            "osreco_rerank_candidates", "Candidates scored by the cross-encoder per search "
            "(its time is osreco_stage_seconds{stage=\"rerank\"})", registry=self.registry,
            buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000))
        self.foldin = Counter(
            "osreco_foldin", "Users of /v1/events folded in off the request thread, by outcome "
            "(folded, failed, refused)", ["result"], registry=self.registry)
        self.query_log = Counter(
            "osreco_query_log", "Query-log documents of served requests, by outcome (written, dropped: "
            "the writer's queue was full, failed: the node refused them)", ["result"], registry=self.registry)
        self._serving: str | None = None
        self.multiprocess_dir = multiprocess_dir()

    @contextmanager
    def stage(self, endpoint: str, stage: str, timings: dict[str, float] | None = None) -> Iterator[None]:
        """Time a stage; also store the milliseconds in ``timings`` when given."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.stage_seconds.labels(endpoint, stage).observe(elapsed)
            if timings is not None:
                timings[stage] = round(timings.get(stage, 0.0) + elapsed * 1000.0, 3)

    def serving(self, artifact_id: str | None) -> None:
        """Point ``osreco_bundle_info`` at the served bundle (drops the previous one's series;
        in multiprocess mode, where a written series cannot be removed, sets it to 0)."""
        if self._serving is not None and self._serving != artifact_id:
            if self.multiprocess_dir:
                self.bundle_info.labels(self._serving).set(0)
            else:
                self.bundle_info.remove(self._serving)
        if artifact_id is not None:
            self.bundle_info.labels(artifact_id).set(1)
        self._serving = artifact_id

    def degraded(self, kind: str) -> None:
        self.degradations.labels(kind).inc()

    def render(self) -> bytes:
        """The text exposition format of this registry, or of every worker's values summed."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)
