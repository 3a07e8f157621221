"""Intent -> OpenSearch query DSL (pure): one ``_msearch``, the native ``hybrid`` query and its
search pipeline, "similar items", "recommend for a user" and the lookup of a user's history.

Rules every body follows:

* user text only ever goes into a ``multi_match`` ``query`` string — never ``query_string``,
  DSL keys or script source; facet values and numbers come from the typed :class:`Intent`;
* filters: one ``terms`` per facet field (values of a field are alternatives), except the
  multi-valued fields in ``QueryOptions.all_of`` (``genres``) where every value is required
  ("romantic comedies" = romance AND comedy); ranges are ``range`` clauses; exclusions go to
  ``must_not``. In kNN queries the same clauses sit *inside* the knn ``filter`` (efficient
  filtering: the graph search honours them, so k results still come back);
* every body has ``timeout``, ``track_total_hits: false`` and a ``_source`` limited to what
  explanations and the API show (never the vectors);
* sort cues: with free text left, the sort is a *re-rank key* applied after fusion
  (:func:`osreco.plugin.fusion.apply_sort`) so relevance still decides which items qualify;
  with no free text, the lexical sub-search becomes a filtered listing sorted by the key
  (by popularity when there is no cue) and the kNN on meaning is skipped (no text, no vector);
* that text-less listing is the same for every user with the same filters, so its ``_msearch``
  header asks for the shard request cache (``request_cache: true``): OpenSearch caches only
  ``size: 0`` requests unless a request asks, and a refresh of the index invalidates the entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.types import Intent, IntentFields

Vector = Sequence[float] | np.ndarray
Json = dict[str, Any]  # one JSON object: a DSL clause, a search body or an _msearch line
SIGNALS = ("bm25", "dense", "cf", "neighbors", "popularity")


@dataclass(frozen=True)
class QueryOptions:
    """How queries are built.

    Args:
        index: the index or alias searched.
        fields: index field names.
        size: candidates each signal returns (kNN ``k`` too).
        ef_search: HNSW candidate list size (``method_parameters.ef_search``; the "num_candidates").
        timeout: OpenSearch time budget per search, e.g. ``"2s"``.
        all_of: facet fields whose values are all required (multi-valued fields).
        title_boost: weight of ``title`` against ``text`` in BM25.

    Raises:
        ConfigError: on an invalid value.
    """

    index: str
    fields: IntentFields = IntentFields()
    size: int = 100
    ef_search: int = 200
    timeout: str = "2s"
    all_of: tuple[str, ...] = ("genres",)
    title_boost: float = 2.0

    def __post_init__(self) -> None:
        if not self.index or "," in self.index:
            raise ConfigError(f"index {self.index!r} must be one index or alias name", field="index")
        if not 1 <= self.size <= 10_000:
            raise ConfigError("size must be in 1..10000", field="size")
        if self.ef_search < self.size:
            raise ConfigError("ef_search must be >= size (HNSW needs at least k candidates)",
                              field="ef_search", fix=f"set ef_search >= {self.size}")
        if not self.timeout or not self.timeout[:-1].replace("m", "").isdigit():
            raise ConfigError(f"timeout {self.timeout!r} is not like '2s' or '500ms'", field="timeout")

    def text_fields(self) -> list[str]:
        """The BM25 fields with boosts: title^2, text, title.cjk, text.cjk, and the ``transcript``
        of audio items (``osreco ingest load --audio-field``; absent fields match nothing)."""
        f, boost = self.fields, f"{self.title_boost:g}"
        return [f"{f.title}^{boost}", f.text, f"{f.title}{f.cjk_suffix}", f"{f.text}{f.cjk_suffix}",
                "transcript", f"transcript{f.cjk_suffix}"]


@dataclass(frozen=True)
class MsearchPlan:
    """The lines of one ``_msearch`` (header, body, header, body, ...) and what each answers.

    ``signals[i]`` names the i-th response: ``bm25``, ``dense``, ``cf`` or ``popularity``.
    """

    lines: list[Json]
    signals: tuple[str, ...]

    def adding(self, signal: str, index: str, body: Json) -> MsearchPlan:
        """This plan plus one more sub-search (``body`` on ``index``) answering ``signal``."""
        return MsearchPlan([*self.lines, {"index": index}, body], (*self.signals, signal))


@dataclass(frozen=True)
class HybridSearch:
    """A native neural-search ``hybrid`` request.

    Args:
        body: the search body (top-level ``hybrid`` query, <= 5 sub-queries).
        signals: the signal of each sub-query, in order.
        pipeline_id: the search pipeline to pass as ``search_pipeline`` (create it once with
            ``PUT _search/pipeline/<id>`` and ``pipeline_body``).
        pipeline_body: normalization (min_max) + combination (arithmetic_mean, weights).
    """

    body: Json
    signals: tuple[str, ...]
    pipeline_id: str
    pipeline_body: Json


def filter_clauses(intent: Intent, options: QueryOptions) -> tuple[list[Json], list[Json]]:
    """The intent's constraints as ``(filter, must_not)`` clause lists, in a fixed order.

    Args:
        intent: the parsed intent.
        options: query options (``all_of`` decides AND vs OR within a field).

    Returns:
        facet clauses (in the intent's field order), then range clauses; exclusions per field.
    """
    filters: list[Json] = []
    for name, values in intent.terms().items():
        if name in options.all_of:
            filters.extend({"term": {name: v}} for v in values)
        else:
            filters.append({"terms": {name: list(values)}})
    filters.extend({"range": {r.field: r.bounds()}} for r in intent.ranges if r.bounds())
    must_not = [{"terms": {name: list(values)}} for name, values in intent.excluded_terms().items()]
    return filters, must_not


def _bool(filters: list[Json], must_not: list[Json], extra_not: Sequence[Json] = ()) -> Json:
    out: Json = {}
    if filters:
        out["filter"] = filters
    if must_not or extra_not:
        out["must_not"] = [*must_not, *extra_not]
    return {"bool": out}


def _base(options: QueryOptions, size: int) -> Json:
    return {"size": size, "timeout": options.timeout, "track_total_hits": False,
            "_source": options.fields.source_fields()}


def _vector(v: Vector) -> list[float]:
    return [float(x) for x in np.asarray(v, dtype=np.float32).ravel()]


def lexical_query(intent: Intent, options: QueryOptions) -> Json:
    """The BM25 query: ``multi_match`` of the remaining text under the intent's filters.

    With no remaining text it is a filtered ``match_all`` (see :func:`listing_sort`).
    """
    filters, must_not = filter_clauses(intent, options)
    q = _bool(filters, must_not)
    if intent.text:
        q["bool"]["must"] = [{"multi_match": {"query": intent.text, "fields": options.text_fields(),
                                              "type": "best_fields", "tie_breaker": 0.3}}]
    else:
        q["bool"]["must"] = [{"match_all": {}}]
    return q


def listing_sort(intent: Intent, fields: IntentFields) -> list[Json]:
    """Sort of a text-less listing: the sort cue's field (``year`` then ``release_date`` for
    "newest", so catalogs with only dates sort too), else popularity; ties by popularity, then
    the quality prior ``rating_avg``, then ``item_id``. The priors may be missing from an older
    index's mapping (``unmapped_type``)."""
    key, order = (intent.sort.key, intent.sort.order) if intent.sort else ("popularity", "desc")
    first = fields.sort_field(key)
    out: list[Json] = [{first: {"order": order, "missing": "_last",
                                **({"unmapped_type": "float"} if first == fields.rating_avg else {})}}]
    if key == "year":
        out.append({fields.release_date: {"order": order, "missing": "_last"}})
    for prior in (fields.popularity, fields.rating_avg):
        if prior != first:
            out.append({prior: {"order": "desc", "missing": "_last", "unmapped_type": "float"}})
    return out + [{fields.item_id: "asc"}]


def knn_query(field: str, vector: Vector, k: int, options: QueryOptions, filter_bool: Json | None) -> Json:
    """A k-NN query on ``field`` with an optional efficient ``filter`` (a ``bool`` query)."""
    body: Json = {"vector": _vector(vector), "k": k, "method_parameters": {"ef_search": options.ef_search}}
    if filter_bool and filter_bool["bool"]:
        body["filter"] = filter_bool
    return {"knn": {field: body}}


def neighbors_query(intent: Intent, options: QueryOptions, history: Sequence[str],
                    exclude: Sequence[str] = ()) -> Json:
    """Items whose stored co-engagement neighbours (``cf_neighbors``) include the user's
    ``history`` items, under the intent's filters, ``exclude`` left out; the score is how
    many of the history items they neighbour (the item-item side of taste)."""
    filters, must_not = filter_clauses(intent, options)
    seen = [{"ids": {"values": list(dict.fromkeys(exclude))}}] if exclude else []
    q = _bool(filters, must_not, seen)
    q["bool"]["should"] = [{"constant_score": {"filter": {"term": {"cf_neighbors": h}}}}
                           for h in dict.fromkeys(history)]
    q["bool"]["minimum_should_match"] = 1
    return q


def _signal_bodies(intent: Intent, options: QueryOptions, query_vector: Vector | None,
                   user_vector: Vector | None, taste_exclude: Sequence[str] = (),
                   neighbors_of: Sequence[str] = ()) -> list[tuple[str, Json]]:
    filters, must_not = filter_clauses(intent, options)
    fb = _bool(filters, must_not)
    out = [("bm25", lexical_query(intent, options))]
    if query_vector is not None and intent.text:
        out.append(("dense", knn_query(options.fields.embedding, query_vector, options.size, options, fb)))
    if user_vector is not None:
        seen = [{"ids": {"values": list(dict.fromkeys(taste_exclude))}}] if taste_exclude else []
        out.append(("cf", knn_query(options.fields.cf_vector, user_vector, options.size, options,
                                    _bool(filters, must_not, seen))))
    if neighbors_of:
        out.append(("neighbors", neighbors_query(intent, options, neighbors_of, taste_exclude)))
    return out


def build_msearch(intent: Intent, options: QueryOptions, query_vector: Vector | None = None,
                  user_vector: Vector | None = None, taste_exclude: Sequence[str] = (),
                  neighbors_of: Sequence[str] = ()) -> MsearchPlan:
    """The ``_msearch`` of a search: BM25, kNN on meaning (with text), kNN on taste (with a user).

    The taste kNN runs inside the query's filters, so a filtered listing for a known user
    reaches the items the user would like among everything the filters allow, not only
    among the most popular ones the listing returns.

    Args:
        intent: the parsed intent.
        options: index, fields, sizes, timeout.
        query_vector: the meaning vector of ``intent.text`` (``None``: BM25 only).
        user_vector: the user's collaborative vector (``None``: not personalized).
        taste_exclude: items the taste kNN leaves out (the user's seen items in a filtered
            listing that demotes them), so its ``k`` results are all new to the user.
        neighbors_of: the user's recent items whose stored neighbours make the signal
            ``neighbors`` (:func:`neighbors_query`; empty: not asked).

    Returns:
        the plan; send ``plan.lines`` as the ``_msearch`` body.

    Example:
        >>> plan = build_msearch(intent, QueryOptions("items"), qvec, uvec)
        >>> responses = client.msearch(body=plan.lines)["responses"]
    """
    lines: list[Json] = []
    signals = []
    for signal, query in _signal_bodies(intent, options, query_vector, user_vector, taste_exclude, neighbors_of):
        body = _base(options, options.size)
        body["query"] = query
        header: Json = {"index": options.index}
        if signal == "bm25" and not intent.text:
            body["sort"] = listing_sort(intent, options.fields)
            header["request_cache"] = True  # a listing repeats across users: cache its hits too
        elif signal == "neighbors":  # many ties in the count: the popular first, then by id
            body["sort"] = [{"_score": "desc"}, *listing_sort(Intent(query="", text=""), options.fields)]
        lines += [header, body]
        signals.append(signal)
    return MsearchPlan(lines, tuple(signals))


def _weights(signals: Sequence[str], weights: Mapping[str, float]) -> list[float]:
    raw = [float(weights.get(s, 0.0)) for s in signals]
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        raise ConfigError(f"hybrid weights {dict(weights)} must be >= 0 with a positive sum over {signals}",
                          field="weights")
    total = sum(raw)
    return [round(w / total, 4) for w in raw]


def build_hybrid_search(intent: Intent, options: QueryOptions, query_vector: Vector | None = None,
                        user_vector: Vector | None = None,
                        weights: Mapping[str, float] | None = None) -> HybridSearch:
    """The same retrieval as :func:`build_msearch` as one native ``hybrid`` query.

    Every sub-query carries the intent's filters itself (the knn ones inside their ``filter``),
    so results are identical in what they allow. The pipeline min-max normalizes each
    sub-query's scores and takes their weighted arithmetic mean; its
    ``hybrid_score_explanation`` processor returns the per-signal scores when searched with
    ``explain=true`` (see :func:`osreco.plugin.fusion.hybrid_signal_scores`).

    Args:
        intent, options, query_vector, user_vector: as in :func:`build_msearch`.
        weights: signal -> weight (normalized to sum 1); default bm25 0.4, dense 0.4, cf 0.2.

    Returns:
        the body, its signals, and the search pipeline (id and body).

    Raises:
        ConfigError: weights are negative or all zero for the signals present.
    """
    parts = _signal_bodies(intent, options, query_vector, user_vector)
    signals = tuple(s for s, _ in parts)
    w = _weights(signals, weights or {"bm25": 0.4, "dense": 0.4, "cf": 0.2})
    body = _base(options, options.size)
    body["query"] = {"hybrid": {"queries": [q for _, q in parts]}}
    pipeline_id = "osreco-hybrid-" + "-".join(f"{s}{round(x * 100)}" for s, x in zip(signals, w))
    pipeline = {
        "description": f"osreco hybrid: min_max + arithmetic_mean over {', '.join(signals)}",
        "phase_results_processors": [{"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": w}}}}],
        "response_processors": [{"hybrid_score_explanation": {}}],
    }
    return HybridSearch(body, signals, pipeline_id, pipeline)


def build_similar(item_id: str, item_vector: Vector, options: QueryOptions,
                  intent: Intent | None = None) -> Json:
    """Items nearest to one item's ``embedding``, the item itself excluded.

    Args:
        item_id: the item (its ``_id``).
        item_vector: its ``embedding`` (read it first with a GET of the item).
        options: query options; ``size`` is k.
        intent: optional constraints to honour as well.

    Returns:
        a search body.
    """
    filters, must_not = filter_clauses(intent, options) if intent else ([], [])
    body = _base(options, options.size)
    body["query"] = knn_query(options.fields.embedding, item_vector, options.size + 1, options,
                              _bool(filters, must_not, [{"ids": {"values": [item_id]}}]))
    return body


def build_history(item_ids: Sequence[str], fields: IntentFields) -> Json:
    """The user's history items looked up by id, titles only: the signal ``history`` that
    "because you liked" cites (searched next to the retrieval, never fused). An ``ids``
    lookup of a few items: the one body without ``timeout`` and ``track_total_hits``.

    Args:
        item_ids: the user's recent items, oldest first.
        fields: index field names (``title``).

    Returns:
        a search body.
    """
    return {"size": len(item_ids), "_source": [fields.title], "query": {"ids": {"values": list(item_ids)}}}


def build_recommend(user_vector: Vector | None, seen_item_ids: Sequence[str],
                    options: QueryOptions) -> MsearchPlan:
    """A user's recommendations: kNN on ``cf_vector`` (taste) and a popularity listing.

    Both exclude the items the user has seen; without a user vector only popularity is asked
    (cold start). Fuse them with ``cf_mode="additive"`` so taste-only items still rank.

    Args:
        user_vector: the user's collaborative vector, or ``None``.
        seen_item_ids: items to leave out.
        options: query options.

    Returns:
        the plan with signals ``("cf", "popularity")`` or ``("popularity",)``.
    """
    seen = [{"ids": {"values": list(dict.fromkeys(seen_item_ids))}}] if seen_item_ids else []
    lines: list[Json] = []
    signals = []
    if user_vector is not None:
        body = _base(options, options.size)
        body["query"] = knn_query(options.fields.cf_vector, user_vector, options.size, options,
                                  _bool([], [], seen))
        lines += [{"index": options.index}, body]
        signals.append("cf")
    body = _base(options, options.size)
    body["query"] = {"bool": {"must": [{"match_all": {}}], **({"must_not": seen} if seen else {})}}
    body["sort"] = [{options.fields.popularity: {"order": "desc", "missing": "_last"}},
                    {options.fields.item_id: "asc"}]
    lines += [{"index": options.index}, body]
    signals.append("popularity")
    return MsearchPlan(lines, tuple(signals))
