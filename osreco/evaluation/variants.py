"""The sidecar under evaluation: the real ``SearchService`` with switches it lacks today.

``SidecarConfig`` switches signals through its ``fusion`` weights (``FusionSettings``), but
three things the evaluation compares are not settings of the sidecar yet, so this subclass
adds them as constructor settings and overrides as little as possible:

- ``use_intent=False``: the query goes to BM25 and kNN as typed (no filters, no exclusions)
  — overrides :meth:`parse` only;
- ``rec``: the fusion of ``/v1/recommend`` (the sidecar's fixed ``recommend_fusion``);
- ``rec.content_weight``: a content signal for ``/v1/recommend`` — kNN on ``embedding`` with
  the mean embedding of the user's most recent history items, fused like any other signal
  (overrides :meth:`rank` only when it ranks with the recommendation fusion).

Everything else (retrieval, ``_msearch``, fusion, CF affinity, explanations, HTTP) is the
sidecar's own code. When the sidecar grows these settings, the variants become plain
``SidecarConfig`` values and this module goes away.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osreco.plugin import schemas
from osreco.plugin.fusion import FusionSettings, SignalResult, read_msearch
from osreco.plugin.intent.parser import detect_language
from osreco.plugin.intent.types import Intent
from osreco.plugin.query import knn_query
from osreco.plugin.service import SearchService
from osreco.plugin.users import UserContext

__all__ = ["EvalService", "recommend_fusion"]


def recommend_fusion(cf: float, popularity: float, content: float) -> FusionSettings:
    """The fusion of one recommendation variant: RRF, additive taste, the three signals' weights."""
    return FusionSettings(method="rrf", cf_weight=cf, popularity_weight=popularity, content_weight=content,
                          cf_mode="additive")


class EvalService(SearchService):
    """``SearchService`` plus the switches above (see the module docstring).

    Args:
        use_intent: apply the parsed intent (``False``: the query as typed, unfiltered).
        rec: the fusion of ``/v1/recommend`` (None: the sidecar's own).
        content_history: how many of the user's most recent items make the content vector.
    """

    def __init__(self, *args: Any, use_intent: bool = True, rec: FusionSettings | None = None,
                 content_history: int = 10, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.use_intent, self.content_history = use_intent, content_history
        if rec is not None:
            self.recommend_fusion = rec

    def parse(self, req: schemas.SearchRequest) -> Intent:
        """The sidecar's intent, or (``use_intent=False``) the query as typed, unfiltered."""
        if self.use_intent:
            return super().parse(req)
        return Intent(query=req.q, text=req.q, language=req.language or detect_language(req.q))

    def rank(self, lists: dict[str, SignalResult], user: UserContext | None, intent: Intent,
             settings: FusionSettings) -> tuple[list, dict[str, float]]:
        """Search ranks as configured; recommendations add the content signal when weighted."""
        if settings is self.recommend_fusion and settings.content_weight > 0 and user is not None and user.history:
            size = len(lists.get("popularity", SignalResult("popularity", [])).hits) or 50
            content = self._content(user, self.content_history, size)
            if content is not None:
                lists = {**lists, "content": content}
        return super().rank(lists, user, intent, settings)

    def _content(self, user: UserContext, history: int, size: int) -> SignalResult | None:
        """kNN on ``embedding`` with the mean embedding of the user's newest ``history`` items."""
        t, embedding = self.transport, self.fields.embedding
        recent = list(user.history)[-history:]
        docs = t.call("content", t.client.mget, index=t.alias, body={"ids": recent}, _source=[embedding])["docs"]
        vectors = [d["_source"][embedding] for d in docs
                   if d.get("found") and (d.get("_source") or {}).get(embedding)]
        if not vectors:
            return None
        mean = np.mean(np.asarray(vectors, dtype=np.float32), axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        options = self.options(size)
        seen = {"bool": {"must_not": [{"ids": {"values": list(user.history)}}]}}
        body = {"size": size, "timeout": options.timeout, "track_total_hits": False,
                "_source": self.fields.source_fields(),
                "query": knn_query(embedding, mean, size, options, seen)}
        resp = t.call("content", t.client.search, index=t.alias, body=body)
        return read_msearch(["content"], [resp])["content"]
