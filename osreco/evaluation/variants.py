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

- ``index_order=True``: an anonymous text-less listing in item-id order instead of the served
  popularity order (the baseline the served listing is measured against) — overrides
  :meth:`rank` only for text-less searches without a sort cue.

:class:`Variant` names one configuration: ``FusionSettings`` and ``RecommendSettings``
overrides plus the switches above.

Everything else (retrieval, ``_msearch``, fusion, CF affinity, explanations, HTTP) is the
sidecar's own code. When the sidecar grows these settings, the variants become plain
``SidecarConfig`` values and this module goes away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osreco.plugin import schemas
from osreco.plugin.fusion import FusionSettings, SignalResult, read_msearch
from osreco.plugin.intent.parser import detect_language
from osreco.plugin.intent.types import Intent
from osreco.plugin.query import knn_query, lexical_query
from osreco.plugin.service import SearchService
from osreco.plugin.users import UserContext

__all__ = ["EvalService", "Variant", "recommend_fusion"]


@dataclass(frozen=True)
class Variant:
    """One configuration of the sidecar under test.

    Args:
        name: the variant's name in the report.
        fusion: overrides of the sidecar's ``FusionSettings`` (search).
        encoder: whether the bundle is loaded (``False``: the sidecar's BM25-only mode).
        use_intent: apply the parsed intent's filters (``False``: the query as typed).
        personalized: send the user id (``False``: anonymous requests).
        rec: the old two-list recommendation fusion (None: the served ``/v1/recommend``).
        rerank: re-order the top ``rerank_top_n`` with the run's cross-encoder (``--rerank-bundle``).
        recommend: overrides of the sidecar's ``RecommendSettings`` (``/v1/recommend`` weights,
            ``similar_cf_weight``).
        index_order: text-less listings in item-id order, not by popularity.
    """

    name: str
    fusion: Mapping[str, Any] = field(default_factory=dict)
    encoder: bool = True
    use_intent: bool = True
    personalized: bool = True
    rec: FusionSettings | None = None
    rerank: bool = False
    recommend: Mapping[str, Any] = field(default_factory=dict)
    index_order: bool = False


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
        index_order: text-less listings without a sort cue in item-id order (not by popularity).
    """

    def __init__(self, *args: Any, use_intent: bool = True, rec: FusionSettings | None = None,
                 content_history: int = 10, index_order: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.use_intent, self.content_history, self.index_order = use_intent, content_history, index_order
        if rec is not None:
            self.recommend_fusion = rec

    def parse(self, req: schemas.SearchRequest) -> Intent:
        """The sidecar's intent, or (``use_intent=False``) the query as typed, unfiltered."""
        if self.use_intent:
            return super().parse(req)
        return Intent(query=req.q, text=req.q, language=req.language or detect_language(req.q))

    def rank(self, lists: dict[str, SignalResult], user: UserContext | None, intent: Intent,
             settings: FusionSettings) -> tuple[list, dict[str, float]]:
        """Search ranks as configured (an ``index_order`` listing in item-id order); recommendations
        add the content signal when weighted."""
        if self.index_order and not intent.text and intent.sort is None and "bm25" in lists:
            lists = {**lists, "bm25": self._index_listing(intent, max(len(lists["bm25"].hits), 1))}
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

    def _index_listing(self, intent: Intent, size: int) -> SignalResult:
        """The text-less listing of ``intent`` (same filters) sorted by item id instead of popularity."""
        t = self.transport
        options = self.options(size)
        body = {"size": size, "timeout": options.timeout, "track_total_hits": False,
                "_source": self.fields.source_fields(), "query": lexical_query(intent, options),
                "sort": [{self.fields.item_id: "asc"}]}
        resp = t.call("listing", t.client.search, index=t.alias, body=body)
        return read_msearch(["bm25"], [resp])["bm25"]
