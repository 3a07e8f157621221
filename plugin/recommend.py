"""``/v1/recommend``: candidate generation and the served blend of what ``osreco cf train`` learned.

A user's score for an unseen item is a weighted sum of min-max scaled signals over the
candidates (:func:`blend`):

* ``als``: ``user . item_factor``. Exact (numpy over the whole catalog, seen items masked)
  when the CF model is loaded and ``items x factors <= exact_max_cells``; otherwise a kNN on
  ``cf_vector`` with the seen ids *inside* the knn ``filter`` (efficient filtering: k unseen
  items come back however many the user has seen);
* ``neighbors``: the item-item part, the sum over the user's newest ``history_items`` items of
  their stored ``cf_neighbor_scores`` (the i-th newest weighted ``history_decay ** i``), read by
  the history lookup the request does anyway;
* ``popularity``: ``log1p`` of the item's stored time-decayed ``popularity`` (the listing);
* ``content`` (users without a CF vector): kNN on ``embedding`` with the mean embedding of
  their items.

Seen items never enter a candidate list. The pure parts (:func:`neighbor_scores`,
:func:`blend`) are what the offline tuning (``bench/tune_recommend.py``) scores with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from opensearchpy import TransportError

from osreco.cf import events as ev_store
from osreco.plugin.errors import ConfigError
from osreco.plugin.fusion import Candidate, SignalResult
from osreco.plugin.intent.types import IntentFields
from osreco.plugin.query import MsearchPlan, QueryOptions, knn_query

if TYPE_CHECKING:  # config imports RecommendSettings from here; these import config
    from osreco.plugin.degradations import Degradations
    from osreco.plugin.transport import NodeTransport
    from osreco.plugin.users import UserContext, Users

__all__ = ["RecommendSettings", "Recommendation", "Recommender", "blend", "neighbor_scores", "knn_inner_product"]

NEIGHBOR_FIELDS = ("cf_neighbors", "cf_neighbor_scores")


@dataclass(frozen=True)
class RecommendSettings:
    """Weights and sizes of the served recommendation (defaults chosen on a validation split,
    see docs/cf.md).

    Args:
        als_weight, neighbor_weight, popularity_weight, content_weight: the blend's weights.
        cold_popularity_weight: the popularity weight for a user without a trained or stored
            vector (a cold user: their first events), when it is larger than ``popularity_weight``.
        history_items: newest history items whose neighbours count.
        history_decay: weight ratio between consecutive history items (1 = all equal).
        candidates: candidates each source contributes.
        exact_max_cells: catalogs with at most this many ``items x factors`` are scored exactly in numpy.
        similar_cf_weight: weight of co-engagement against content in similar items.
    """

    als_weight: float = 1.0
    neighbor_weight: float = 4.0
    popularity_weight: float = 0.0
    content_weight: float = 0.3
    cold_popularity_weight: float = 0.1
    history_items: int = 20
    history_decay: float = 0.9
    candidates: int = 50
    exact_max_cells: int = 4_000_000
    similar_cf_weight: float = 0.9

    def __post_init__(self) -> None:
        for name in ("als_weight", "neighbor_weight", "popularity_weight", "content_weight", "cold_popularity_weight",
                     "similar_cf_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0", field=name)
        if self.similar_cf_weight > 1:
            raise ConfigError("similar_cf_weight must be in [0, 1]", field="OSRECO_SIMILAR_CF_WEIGHT")
        if not 0 < self.history_decay <= 1:
            raise ConfigError("history_decay must be in (0, 1]", field="OSRECO_RECOMMEND_HISTORY_DECAY")
        if self.history_items < 1 or not 1 <= self.candidates <= 1000 or self.exact_max_cells < 0:
            raise ConfigError("history_items >= 1, candidates in 1..1000, exact_max_cells >= 0",
                              field="OSRECO_RECOMMEND_CANDIDATES")

    def weights(self, cold: bool = False) -> dict[str, float]:
        """Signal -> weight (``cold``: a user without a vector, popularity weighs at least
        ``cold_popularity_weight``)."""
        popularity = max(self.popularity_weight, self.cold_popularity_weight) if cold else self.popularity_weight
        return {"als": self.als_weight, "neighbors": self.neighbor_weight,
                "popularity": popularity, "content": self.content_weight}


def knn_inner_product(score: float) -> float:
    """The inner product behind a Lucene ``innerproduct`` kNN score (``1 + ip``, or ``1 / (1 - ip)``)."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / max(score, 1e-12)


def neighbor_scores(history: Sequence[tuple[str, Sequence[str], Sequence[float]]], decay: float,
                    exclude: set[str]) -> tuple[dict[str, float], dict[str, tuple[str, float]]]:
    """The item-item part: ``sum_i decay**i * score(h_i -> item)`` over history, newest first.

    Args:
        history: ``(item id, neighbour ids, neighbour scores)`` of the user's items, newest first.
        exclude: items left out (the user's seen items).

    Returns:
        ``({item: score}, {item: (the history item that contributed most, its weighted score)})``.
    """
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for pos, (source, ids, weights) in enumerate(history):
        w = decay ** pos
        for item, s in zip(ids, weights):
            if item in exclude:
                continue
            part = w * float(s)
            scores[item] = scores.get(item, 0.0) + part
            if part > best.get(item, (-math.inf, ""))[0]:
                best[item] = (part, source)
    return scores, {i: (b[1], b[0]) for i, b in best.items()}


def blend(signals: Mapping[str, Mapping[str, float]], weights: Mapping[str, float],
          candidates: Sequence[str]) -> dict[str, dict[str, float]]:
    """Each candidate's weighted sum of min-max scaled signal values (absent: 0).

    Returns:
        candidate -> {signal: contribution} (the score is their sum).
    """
    out: dict[str, dict[str, float]] = {c: {} for c in candidates}
    for name, values in signals.items():
        w = float(weights.get(name, 0.0))
        present = [values[c] for c in candidates if c in values]
        if not w or not present:
            continue
        lo, hi = min(present), max(present)
        span = hi - lo
        for c in candidates:
            if c in values:
                out[c][name] = w * ((values[c] - lo) / span if span > 1e-12 else 1.0)
    return out


@dataclass
class Recommendation:
    """The ranked candidates of one request and what explaining them needs."""

    ranked: list[Candidate]
    history: SignalResult | None = None
    affinity: dict[str, float] = field(default_factory=dict)
    because: dict[str, tuple[str, float]] = field(default_factory=dict)  # item -> (history item, its part)
    partial: dict[str, Any] = field(default_factory=dict)
    personalized: bool = False


def _not(clauses: list[dict[str, Any]]) -> dict[str, Any] | None:
    return {"bool": {"must_not": clauses}} if clauses else None


class Recommender:
    """Candidate generation and the blend for ``/v1/recommend`` (see the module docstring).

    Args:
        transport: the node.
        users: the users and the CF model.
        fields: index field names.
        settings: weights and sizes.
        options: query options for a number of candidates.
    """

    def __init__(self, transport: NodeTransport, users: Users, fields: IntentFields, settings: RecommendSettings,
                 options: Callable[[int], QueryOptions]):
        self.transport, self.users, self.fields, self.settings, self.options = (
            transport, users, fields, settings, options)

    def recommend(self, user: UserContext | None, k: int, deg: Degradations) -> Recommendation:
        """The user's top ``k`` candidates first (fewer only when the catalog has fewer unseen
        items), then the other ranked candidates whose sources were read (the query log's)."""
        s, f = self.settings, self.fields
        seen = list(dict.fromkeys(user.all_seen)) if user else []
        if user is not None and user.vector is None and not seen:
            seen = self._recent_events(user.key, deg)
        vector = user.vector if user else None
        cold = vector is None  # no trained or stored vector: popularity counts (cold_popularity_weight)
        model = self.users.cf_model
        if vector is None and seen and model is not None:
            folded = model.fold_in(seen)
            vector = folded if np.any(folded) else None
        if model is not None and vector is not None and model.dim != len(vector):
            model = None  # a stored vector of another model: serve it through the index's kNN only
        exact = vector is not None and model is not None and model.item_factors.size <= s.exact_max_cells
        recent = seen[-s.history_items:][::-1]
        opts = self.options(max(s.candidates, k))
        must_not = [{"ids": {"values": seen}}] if seen else []
        signals: dict[str, dict[str, float]] = {}
        if exact and model is not None and vector is not None:
            signals["als"] = self._exact_als(model, vector, seen, opts.size)
        best_als = sorted(signals.get("als", {}), key=lambda c: -signals["als"][c])[:2 * k]
        plan = self._first_plan(opts, must_not, vector is not None and not exact, vector, recent, best_als, cold,
                                with_embedding=user is not None and user.vector is None)
        read, partial = self.transport.msearch("recommend", plan, deg)
        sources = {str(h["_id"]): h.get("_source") or {} for name in ("popularity", "cf", "fetch")
                   if name in read for h in read[name].hits}
        if "cf" in read:
            signals["als"] = {str(h["_id"]): knn_inner_product(float(h["_score"])) for h in read["cf"].hits}
        newest = read.get("recent")
        by_id = {str(h["_id"]): h.get("_source") or {} for h in (newest.hits if newest else [])}
        hist = [(i, by_id[i].get("cf_neighbors") or [], by_id[i].get("cf_neighbor_scores") or [])
                for i in recent if i in by_id]
        seen_set = set(seen)
        nb, because = neighbor_scores(hist, s.history_decay, seen_set)
        signals["neighbors"] = dict(sorted(nb.items(), key=lambda kv: -kv[1])[:opts.size])
        if user is not None and user.vector is None and s.content_weight > 0:
            self._content(recent, by_id, must_not, opts, sources, signals, deg)
        if "popularity" in read and not any(isinstance((h.get("_source") or {}).get(f.popularity), (int, float))
                                            for h in read["popularity"].hits):
            deg.add("popularity", f"no item in {opts.index} has a popularity: popular items are in index order "
                                  "(run `osreco cf train` to write popularity)")
        candidates = [c for c in dict.fromkeys([*sources, *(c for v in signals.values() for c in v)])
                      if c not in seen_set]
        affinity: dict[str, float] = {}
        if vector is not None and model is not None:
            known = [c for c in candidates if model.item_positions([c])]
            scores = model.item_factors[model.item_positions(known)] @ vector if known else []
            affinity = {c: float(x) for c, x in zip(known, scores)}
            signals["als"] = affinity
        titles: dict[str, str] = {}

        def cited(top: list[str]) -> set[str]:
            return {because[c][0] for c in top if c in because} | self._liked(user, top)

        ranked = self._complete(candidates, signals, sources, affinity, k, opts, deg, cited, titles,
                                self.settings.weights(cold))
        history = SignalResult("history", [{"_id": i, "_source": {f.title: t}} for i, t in titles.items()])
        return Recommendation(ranked, history, affinity, because, partial,
                              personalized=vector is not None or bool(hist))

    def _liked(self, user: UserContext | None, top: list[str], n: int = 2, min_similarity: float = 0.3) -> set[str]:
        """The history items "because you liked" will cite for ``top`` (cosine of CF factors, as
        :func:`osreco.plugin.explain.because_you_liked`), so their titles come with the results."""
        model = self.users.cf_model
        if user is None or not user.history or model is None:
            return set()
        hist = self.users.factors(list(dict.fromkeys(user.history)))
        items = self.users.factors(top)
        if not hist or not items:
            return set()
        hids = list(hist)
        h = np.stack([hist[i] for i in hids]).astype(np.float64)
        r = np.stack([items[i] for i in items]).astype(np.float64)
        h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
        sims = r @ h.T
        out: set[str] = set()
        for row in sims:
            best = np.argsort(-row, kind="stable")[:n + 1]
            out.update(hids[j] for j in best if row[j] >= min_similarity - 1e-4)
        return out

    @staticmethod
    def _exact_als(model: Any, vector: np.ndarray, seen: Sequence[str], size: int) -> dict[str, float]:
        """The ``size`` best unseen items by ``user . item_factor`` over the whole catalog (numpy)."""
        scores = model.als_scores(vector).astype(np.float64)
        scores[np.asarray(model.item_positions(seen), dtype=np.int64)] = -np.inf
        size = min(size, len(scores))
        top = np.argpartition(-scores, size - 1)[:size] if size < len(scores) else np.arange(len(scores))
        return {str(model.item_ids[i]): float(scores[i]) for i in top if np.isfinite(scores[i])}

    def _first_plan(self, opts: QueryOptions, must_not: list[dict[str, Any]], knn: bool, vector: np.ndarray | None,
                    recent: list[str], fetch: list[str], cold: bool, with_embedding: bool) -> MsearchPlan:
        """One ``_msearch``: the popularity listing (users without taste, or a popularity weight),
        the taste kNN (when not exact), the newest items' neighbours, and the sources of the best
        exact ALS candidates."""
        f = self.fields
        base = {"timeout": opts.timeout, "track_total_hits": False, "_source": f.source_fields()}
        query: dict[str, Any] = {"bool": {"must": [{"match_all": {}}], **({"must_not": must_not} if must_not else {})}}
        plan = MsearchPlan([], ())
        if vector is None or cold or self.settings.popularity_weight > 0:  # else popularity only breaks ties
            plan = plan.adding("popularity", opts.index, {
                "size": opts.size, **base, "query": query,
                "sort": [{f.popularity: {"order": "desc", "missing": "_last"}}, {f.item_id: "asc"}]})
        if knn and vector is not None:
            plan = plan.adding("cf", opts.index, {"size": opts.size, **base, "query": knn_query(
                f.cf_vector, vector, opts.size, opts, _not(must_not))})
        if recent:
            wanted = [*NEIGHBOR_FIELDS] + ([f.embedding] if with_embedding else [])
            plan = plan.adding("recent", opts.index, {"size": len(recent), "_source": wanted,
                                                      "query": {"ids": {"values": recent}}})
        if fetch:
            plan = plan.adding("fetch", opts.index, {"size": len(fetch), "_source": f.source_fields(),
                                                     "query": {"ids": {"values": fetch}}})
        return plan

    def _content(self, recent: list[str], by_id: dict[str, dict[str, Any]], must_not: list[dict[str, Any]],
                 opts: QueryOptions, sources: dict[str, dict[str, Any]], signals: dict[str, dict[str, float]],
                 deg: Degradations) -> None:
        """Users without a CF vector: kNN on ``embedding`` with the mean embedding of their items."""
        f = self.fields
        vecs = [by_id[i][f.embedding] for i in recent if by_id.get(i, {}).get(f.embedding)]
        if not vecs:
            return
        mean = np.mean(np.asarray(vecs, dtype=np.float32), axis=0)
        body = {"size": opts.size, "timeout": opts.timeout, "track_total_hits": False,
                "_source": f.source_fields(), "query": knn_query(
                    f.embedding, mean / max(float(np.linalg.norm(mean)), 1e-12), opts.size, opts, _not(must_not))}
        read, _ = self.transport.search("recommend", "content", body, deg)
        hits = read["content"].hits
        sources.update({str(h["_id"]): h.get("_source") or {} for h in hits})
        signals["content"] = {str(h["_id"]): float(h["_score"]) for h in hits}

    def _complete(self, candidates: list[str], signals: dict[str, dict[str, float]],
                  sources: dict[str, dict[str, Any]], affinity: dict[str, float], k: int, opts: QueryOptions,
                  deg: Degradations, cited: Callable[[list[str]], set[str]],
                  titles: dict[str, str], weights: Mapping[str, float]) -> list[Candidate]:
        """Rank; fetch the sources (and popularity) of top-``k`` candidates not read yet, and the
        titles of the history items their explanations cite (into ``titles``), rank again.

        An unread candidate is ranked with the highest popularity seen (an upper bound: the
        listing holds the most popular unseen items), so once the top ``k`` are all read no
        unread candidate can outrank them.
        """
        pop_field = self.fields.popularity
        for _ in range(3):
            known = {c: math.log1p(max(float(p), 0.0)) for c in candidates if c in sources
                     for p in [sources[c].get(pop_field)] if isinstance(p, (int, float))}
            ceiling = max(known.values(), default=0.0)
            signals["popularity"] = {**{c: ceiling for c in candidates if c not in sources}, **known}
            order = self._order(candidates, signals, weights)
            missing = [c for c in order[:k] if c not in sources]
            untitled = sorted(cited(order[:k]) - set(titles))
            if not missing and not untitled:
                break
            ids = [*missing, *untitled]
            read, _ = self.transport.search("recommend", "fetch", {
                "size": len(ids), "_source": self.fields.source_fields(), "query": {"ids": {"values": ids}}}, deg)
            got = {str(h["_id"]): h.get("_source") or {} for h in read["fetch"].hits}
            sources.update({i: src for i, src in got.items() if i in missing})
            titles.update({i: str(got.get(i, {}).get(self.fields.title) or i) for i in untitled})
            candidates = [c for c in candidates if c in sources or c not in missing]
        signals["popularity"] = {c: v for c, v in signals["popularity"].items() if c in sources}
        candidates = [c for c in candidates if c in sources]
        parts = blend(signals, weights, candidates)
        pop = signals["popularity"]
        # the top k are served; the rest (up to the candidate depth) go to the query log
        best = sorted(candidates, key=lambda c: (-sum(parts[c].values()), -pop.get(c, -1.0), c))[:max(k, opts.size)]
        ranks = {name: {c: r for r, c in enumerate(sorted(v, key=lambda c: -v[c]), 1)} for name, v in signals.items()}
        return [Candidate(c, sum(parts[c].values()), cf_score=affinity.get(c),
                          ranks={n: r[c] for n, r in ranks.items() if c in r},
                          contributions={n: round(v, 6) for n, v in parts[c].items()}, source=sources[c])
                for c in best]

    def _order(self, candidates: list[str], signals: dict[str, dict[str, float]],
               weights: Mapping[str, float]) -> list[str]:
        """Candidates by blended score; ties by popularity, then id."""
        parts = blend(signals, weights, candidates)
        pop = signals.get("popularity", {})
        return sorted(candidates, key=lambda c: (-sum(parts[c].values()), -pop.get(c, -1.0), c))

    def _recent_events(self, user_key: str, deg: Degradations) -> list[str]:
        """Item ids of a user's newest events (oldest first), for users without a stored history."""
        try:
            events = ev_store.recent_events(self.transport.client, self.users.store.prefix, user_key, 50)
        except (TransportError, OSError) as e:
            logging.getLogger("osreco.plugin").warning("recent events not read: %s", e)
            deg.add("user_events", "recent events not read: the events index did not answer")
            return []
        return list(dict.fromkeys(e.item_id for e in sorted(events, key=lambda e: e.timestamp)))
