"""The sidecar under evaluation: the real ``SearchService`` with three switches it lacks today.

``SidecarConfig`` switches signals through ``FusionConfig`` weights, but three things the
evaluation compares are not settings of the sidecar yet, so this subclass adds them as
constructor settings and overrides as little as possible:

- ``use_intent=False``: the query goes to BM25 and kNN as typed (no filters, no exclusions)
  — overrides :meth:`parse` only;
- ``rec``: the fusion weights of ``/v1/recommend`` (hard-coded in ``recommend``) — overrides
  :meth:`rank` only when it is called with recommendation settings;
- ``rec.content_weight``: a content signal for ``/v1/recommend`` — kNN on ``embedding`` with
  the mean embedding of the user's most recent history items, fused like any other signal.

Everything else (retrieval, ``_msearch``, fusion, CF affinity, explanations, HTTP) is the
sidecar's own code. When the sidecar grows these settings, the variants become plain
``SidecarConfig`` values and this module goes away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from osreco.plugin import schemas
from osreco.plugin.fusion import FusionOptions, SignalResult, read_msearch
from osreco.plugin.intent.parser import detect_language
from osreco.plugin.intent.types import Intent
from osreco.plugin.query import knn_query
from osreco.plugin.service import SearchService, UserContext

__all__ = ["RecSettings", "EvalService"]


@dataclass(frozen=True)
class RecSettings(FusionOptions):
    """Recommendation fusion weights plus the content signal (``fuse`` reads ``content_weight``).

    Args:
        content_weight: weight of the content signal (0 = not asked).
        content_history: how many of the user's most recent items make the content vector.
    """

    content_weight: float = 0.0
    content_history: int = 10


class EvalService(SearchService):
    """``SearchService`` plus the switches above (see the module docstring)."""

    def __init__(self, *args: Any, use_intent: bool = True, rec: RecSettings | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.use_intent = use_intent
        self.rec = rec

    def parse(self, req: schemas.SearchRequest) -> Intent:
        """The sidecar's intent, or (``use_intent=False``) the query as typed, unfiltered."""
        if self.use_intent:
            return super().parse(req)
        return Intent(query=req.q, text=req.q, language=req.language or detect_language(req.q))

    def rank(self, lists: dict[str, SignalResult], user: UserContext | None, intent: Intent,
             settings: Any) -> tuple[list, dict[str, float]]:
        """Search ranks as configured; recommendations use ``self.rec`` and its content signal."""
        is_recommend = isinstance(settings, FusionOptions) and not intent.query
        if self.rec is not None and is_recommend:
            settings = self.rec
            if self.rec.content_weight > 0 and user is not None and user.history:
                content = self._content(user, self.rec.content_history, len(lists.get("popularity", SignalResult(
                    "popularity", [])).hits) or 50)
                if content is not None:
                    lists = {**lists, "content": content}
        return super().rank(lists, user, intent, settings)

    def _content(self, user: UserContext, history: int, size: int) -> SignalResult | None:
        """kNN on ``embedding`` with the mean embedding of the user's newest ``history`` items."""
        recent = list(user.history)[-history:]
        docs = self.node("content", self.client.mget, index=self.config.alias, body={"ids": recent},
                         _source=[self.fields.embedding])["docs"]
        vectors = [d["_source"][self.fields.embedding] for d in docs
                   if d.get("found") and (d.get("_source") or {}).get(self.fields.embedding)]
        if not vectors:
            return None
        mean = np.mean(np.asarray(vectors, dtype=np.float32), axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        options = self.options(size)
        seen = {"bool": {"must_not": [{"ids": {"values": list(user.history)}}]}}
        body = {"size": size, "timeout": options.timeout, "track_total_hits": False,
                "_source": self.fields.source_fields(),
                "query": knn_query(self.fields.embedding, mean, size, options, seen)}
        resp = self.node("content", self.client.search, index=self.config.alias, body=body)
        return read_msearch(["content"], [resp])["content"]
