"""Prometheus metrics of one app: latency per endpoint and per stage, degradations, errors.

Each app gets its own ``CollectorRegistry`` so several apps (tests, benchmarks) never
collide in the global registry.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

STAGES = ("parse", "embed", "search", "fuse", "explain", "store")
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

    def degraded(self, kind: str) -> None:
        self.degradations.labels(kind).inc()

    def render(self) -> bytes:
        """The text exposition format of this registry."""
        return generate_latest(self.registry)
