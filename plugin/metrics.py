"""Prometheus metrics of one app: latency per endpoint and per stage, degradations, errors.

Each app gets its own ``CollectorRegistry`` so several apps (tests, benchmarks) never
collide in the global registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
            "osreco_bundle_info", "The bundle being served (1 for its artifact_id)", ["artifact_id"],
            registry=self.registry)
        self.reranked = Histogram(
            "osreco_rerank_candidates", "Candidates scored by the cross-encoder per search "
            "(its time is osreco_stage_seconds{stage=\"rerank\"})", registry=self.registry,
            buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000))
        self._serving: str | None = None

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
        """Point ``osreco_bundle_info`` at the served bundle (drops the previous one's series)."""
        if self._serving is not None and self._serving != artifact_id:
            self.bundle_info.remove(self._serving)
        if artifact_id is not None:
            self.bundle_info.labels(artifact_id).set(1)
        self._serving = artifact_id

    def degraded(self, kind: str) -> None:
        self.degradations.labels(kind).inc()

    def render(self) -> bytes:
        """The text exposition format of this registry."""
        return generate_latest(self.registry)
