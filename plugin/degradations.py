"""What went wrong in one request but was served around: each entry is logged, counted in the
metrics (``osreco_degradations_total{kind}``) and listed in the response's ``degradations``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from osreco.plugin.metrics import Metrics

log = logging.getLogger("osreco.plugin.service")

__all__ = ["Degradations"]


@dataclass
class Degradations:
    """The degradations of one request, in the order they happened."""

    metrics: Metrics
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        """Record one: ``kind`` is the metric label (``encoder``, ``user_store``, ...)."""
        log.warning("degraded (%s): %s", kind, message)
        self.metrics.degraded(kind)
        self.items.append({"kind": kind, "message": message})
