"""Similar items: co-engagement (the item's stored ``cf_neighbors``) blended with content
(kNN on ``embedding``), under optional filters.

``score = w * minmax(neighbour score) + (1 - w) * minmax(content score)`` with
``w = similar_cf_weight`` (``OSRECO_SIMILAR_CF_WEIGHT``). Both candidate lists honour the
same filter clauses (the neighbours are looked up by id *and* filters; the kNN has them in
its efficient ``filter``), so "movies like X from the 80s" still returns k items.

``by`` (``/v1/items/{id}/similar?by=``) picks the signals: ``text`` (kNN on ``embedding``),
``taste`` (co-engagement neighbours), ``image`` (kNN on ``image_embedding``: looks like it),
``all`` (the three blended; image weighted by ``OSRECO_IMAGE_WEIGHT``); absent: the blend above.

Example:
    >>> filters = filter_clauses(intent, options)            # osreco.plugin.query
    >>> SimilarItems(transport, fields, 0.7, options).rank("1", 10, filters, deg)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from osreco.plugin.degradations import Degradations
from osreco.plugin.errors import NotFoundError
from osreco.plugin.fusion import Candidate
from osreco.plugin.intent.types import IntentFields
from osreco.plugin.query import MsearchPlan, QueryOptions, knn_query
from osreco.plugin.recommend import NEIGHBOR_FIELDS, blend
from osreco.plugin.transport import NodeTransport

__all__ = ["SIMILAR_BY", "FilterClauses", "SimilarItems"]
SIMILAR_BY = ("image", "text", "taste", "all")

Json = dict[str, Any]
FilterClauses = tuple[Sequence[Json], Sequence[Json]]  # (filter, must_not), as query.filter_clauses returns


class SimilarItems:
    """Items like one item (see the module docstring).

    Args:
        transport: the node.
        fields: index field names.
        cf_weight: weight of co-engagement in [0, 1] (the rest is content).
        options: query options for a number of candidates.
    """

    def __init__(self, transport: NodeTransport, fields: IntentFields, cf_weight: float,
                 options: Callable[[int], QueryOptions]):
        self.transport, self.fields, self.cf_weight, self.options = transport, fields, cf_weight, options
        self.image_weight = 1.0  # the image signal's weight in by=all (set by the service from its config)

    def weights(self, by: str | None) -> dict[str, float]:
        """Signal weights for ``by`` (None: neighbours and content as configured)."""
        w = self.cf_weight
        return {None: {"neighbors": w, "dense": 1.0 - w}, "text": {"dense": 1.0}, "taste": {"neighbors": 1.0},
                "image": {"image": 1.0},
                "all": {"neighbors": w, "dense": 1.0 - w, "image": self.image_weight}}[by]

    def rank(self, item_id: str, k: int, intent_filters: FilterClauses | None,
             deg: Degradations, by: str | None = None) -> list[Candidate]:
        """The ``k`` items most like ``item_id`` that pass ``intent_filters`` (the item itself excluded).

        Args:
            item_id: the item (``_id``).
            k: results wanted.
            intent_filters: ``(filter, must_not)`` clauses, e.g. ``filter_clauses(intent, options)``; None = none.
            deg: where failed sub-searches are reported.
            by: which signals (``SIMILAR_BY``; None: neighbours and content).

        Returns:
            Ranked candidates (``contributions``: ``neighbors`` and ``dense``), at most ``k``.

        Raises:
            NotFoundError: no such item, or it has neither an embedding nor neighbours.
        """
        t, f = self.transport, self.fields
        want = self.weights(by)
        doc = t.call("item", t.client.get, index=t.alias, id=item_id,
                     _source=[f.embedding, "image_embedding", *NEIGHBOR_FIELDS], ignore=[404])
        src = (doc.get("_source") or {}) if doc.get("found") else {}
        vector = src.get(f.embedding) if "dense" in want else None
        picture = src.get("image_embedding") if "image" in want else None
        neighbors = [str(n) for n in src.get("cf_neighbors") or []] if "neighbors" in want else []
        weights = [float(x) for x in src.get("cf_neighbor_scores") or []]
        if vector is None and not neighbors and picture is None:
            asked = {None: "an embedding nor cf_neighbors", "text": "an embedding", "taste": "cf_neighbors",
                     "image": "an image_embedding", "all": "an embedding, cf_neighbors nor an image_embedding"}[by]
            raise NotFoundError(f"item {item_id!r} is not in {t.alias} (or has {'no ' if by else 'neither '}"
                                f"{asked})", item_id=item_id)
        filters, must_not = intent_filters or ((), ())
        not_self = [*must_not, {"ids": {"values": [item_id]}}]
        opts = self.options(max(k, 1))
        plan = MsearchPlan([], ())
        if picture is not None:
            size = max(k, opts.size)
            plan = plan.adding("image", opts.index, {
                "size": size, "timeout": opts.timeout, "track_total_hits": False, "_source": f.source_fields(),
                "query": knn_query("image_embedding", picture, size, opts,
                                   {"bool": {"filter": list(filters), "must_not": not_self}})})
        if vector is not None and want.get("dense", 0) > 0:
            size = max(k, opts.size)
            plan = plan.adding("dense", opts.index, {
                "size": size, "timeout": opts.timeout, "track_total_hits": False, "_source": f.source_fields(),
                "query": knn_query(f.embedding, vector, size, opts,
                                   {"bool": {"filter": list(filters), "must_not": not_self}})})
        if neighbors and want.get("neighbors", 0) > 0:
            plan = plan.adding("neighbors", opts.index, {
                "size": len(neighbors), "_source": f.source_fields(),
                "query": {"bool": {"filter": [{"ids": {"values": neighbors}}, *filters], "must_not": not_self}}})
        if not plan.signals:
            return []
        read, _ = t.msearch("similar", plan, deg)
        sources: dict[str, Json] = {}
        signals: dict[str, dict[str, float]] = {}
        for name in ("dense", "image"):
            if name in read:
                signals[name] = {str(h["_id"]): float(h["_score"]) for h in read[name].hits}
        if "neighbors" in read:
            found = {str(h["_id"]) for h in read["neighbors"].hits}
            signals["neighbors"] = {n: w for n, w in zip(neighbors, weights) if n in found}
        for r in read.values():
            for h in r.hits:
                sources[str(h["_id"])] = h.get("_source") or {}
        candidates = list(sources)
        parts = blend(signals, want, candidates)
        order = sorted(candidates, key=lambda c: (-sum(parts[c].values()), c))[:k]
        return [Candidate(c, sum(parts[c].values()), dense_score=signals.get("dense", {}).get(c),
                          ranks={n: r + 1 for n, v in signals.items() for r, x in
                                 enumerate(sorted(v, key=lambda i: -v[i])) if x == c},
                          contributions={n: round(v, 6) for n, v in parts[c].items()}, source=sources[c])
                for c in order]
