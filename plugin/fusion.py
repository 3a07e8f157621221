"""Fusion of per-signal hit lists into one ranking (pure): RRF or normalized linear, a
collaborative boost, optional MMR diversity, and sort cues as a re-rank key.

Scores (``S`` = the text signals present: ``bm25``, ``dense``, and ``popularity`` for
recommendations; ``w_s`` their weights; ``r_s(d)`` the 1-based rank of item ``d`` in signal
``s``; ``n_s(d)`` its min-max normalized score in ``s``, 0 when absent):

* ``rrf``:    ``base(d) = sum_s w_s / (rrf_k + r_s(d))``
* ``linear``: ``base(d) = sum_s w_s * n_s(d)``; a list whose scores are all equal normalizes to 1;
  hits without a score (sorted listings) are scored by rank, ``1 - (r - 1) / len``.
* collaborative affinity ``a(d)`` = min-max normalized ``cf`` score (or the ``affinity``
  mapping when given), 0 when unknown; ``beta = cf_weight``:
  ``multiplicative`` (default for search): ``score = base * (1 + beta * a)`` — taste reorders
  what the query found but cannot pull in what it did not;
  ``additive`` (recommendations; also used when no text signal is present):
  ``score = base + beta / (rrf_k + r_cf)`` for RRF (``beta * a / (rrf_k + 1)`` when an
  ``affinity`` mapping is given), ``base + beta * a`` for linear.

Ties break by best rank, then ``item_id``, so output is deterministic. ``contributions``
holds each signal's share of ``score`` (they add up to it) for explanations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.types import IntentFields, SortKey

__all__ = ["Candidate", "FusionSettings", "SignalResult", "fuse", "read_msearch", "apply_sort", "mmr",
           "candidates_from_hybrid", "hybrid_signal_scores"]

FUSION_METHODS = ("rrf", "linear")
CF_MODES = ("multiplicative", "additive")
Hit = Mapping[str, Any]  # one OpenSearch hit: ``_id``, ``_score``, ``_source``


@dataclass(frozen=True)
class FusionSettings:
    """How candidate lists are retrieved and merged (formulas in the module docstring).

    The sidecar's configured fusion (``SidecarConfig.fusion``), the fixed settings of
    ``/v1/recommend`` and ``/v1/items/<id>/similar``, and the evaluation's variants are all
    values of this one class.

    Args:
        method: ``rrf`` (reciprocal rank) or ``linear`` (min-max normalized, weighted).
        bm25_weight, dense_weight: weights of the two text signals.
        cf_weight: strength of the collaborative boost (0 disables it); in a search, the
            weight of the ``text`` query class (see :mod:`osreco.plugin.taste`).
        listing_cf_weight: the taste weight of a filtered listing (no free text left).
        title_cf_weight: the taste weight of a title lookup (the text names a catalog title).
        demote_seen: demote the items a known user already interacted with in a filtered listing.
        neighbors_weight: weight of the ``neighbors`` list (items the stored co-engagement
            neighbours of the user's recent items name) in a known user's filtered listing.
        rrf_k: the RRF rank constant.
        popularity_weight: weight of the popularity listing (recommendations).
        content_weight: weight of a ``content`` signal when one is fused (0 = none asked).
        image_weight: weight of the ``image`` signal (the query photo's kNN on ``image_embedding``).
        text_image_weight: weight of the ``text_image`` signal (the query text, through an image–text
            bundle's text tower, kNN on ``image_embedding``).
        cf_mode: ``multiplicative`` or ``additive`` collaborative boost.
        candidates: how many candidates each signal contributes (more when paging deeper).
        ef_search: HNSW candidate list size of the kNN searches (raised to ``candidates``).
        mmr_lambda: relevance/diversity trade-off for MMR; ``None`` disables MMR.

    Raises:
        ConfigError: unknown method/mode, a negative weight, ``rrf_k < 1``, ``candidates``
            outside 1..1000, ``ef_search < 1`` or ``mmr_lambda`` outside [0, 1].
    """

    method: str = "rrf"
    bm25_weight: float = 0.5
    dense_weight: float = 0.5
    cf_weight: float = 0.3
    listing_cf_weight: float = 0.5
    title_cf_weight: float = 0.1
    demote_seen: bool = True
    neighbors_weight: float = 0.5
    rrf_k: int = 60
    popularity_weight: float = 0.5
    content_weight: float = 0.0
    image_weight: float = 1.0
    text_image_weight: float = 0.3
    cf_mode: str = "multiplicative"
    candidates: int = 50
    ef_search: int = 100
    mmr_lambda: float | None = None

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ConfigError(f"fusion method {self.method!r} is not one of {FUSION_METHODS}",
                              field="OSRECO_FUSION")
        if self.cf_mode not in CF_MODES:
            raise ConfigError(f"cf_mode {self.cf_mode!r} is not one of {CF_MODES}", field="cf_mode")
        for name in ("bm25_weight", "dense_weight", "cf_weight", "listing_cf_weight", "title_cf_weight",
                     "neighbors_weight", "popularity_weight", "content_weight", "image_weight",
                     "text_image_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0", field=name)
        if self.rrf_k < 1 or not 1 <= self.candidates <= 1000 or self.ef_search < 1:
            raise ConfigError("rrf_k must be >= 1 and candidates in 1..1000", field="candidates")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError("mmr_lambda must be in [0, 1]", field="OSRECO_MMR_LAMBDA")


@dataclass(frozen=True)
class Candidate:
    """One fused result.

    Args:
        item_id: the item (``_id``).
        score: the fused score.
        bm25_score, dense_score, cf_score: the raw OpenSearch score in each signal, ``None``
            when the signal did not return the item (hybrid path: min-max normalized scores).
        ranks: signal -> 1-based rank.
        contributions: signal -> share of ``score``.
        source: the item's ``_source`` as returned.
    """

    item_id: str
    score: float
    bm25_score: float | None = None
    dense_score: float | None = None
    cf_score: float | None = None
    ranks: Mapping[str, int] = field(default_factory=dict)
    contributions: Mapping[str, float] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def signals(self) -> tuple[str, ...]:
        """The signals that retrieved this item."""
        return tuple(self.ranks)


@dataclass(frozen=True)
class SignalResult:
    """One ``_msearch`` response, read: its hits and what went wrong with it."""

    signal: str
    hits: list[dict[str, Any]]
    timed_out: bool = False
    failed_shards: int = 0
    error: str | None = None


def read_msearch(signals: Sequence[str], responses: Sequence[Mapping[str, Any]]) -> dict[str, SignalResult]:
    """Pair ``_msearch`` responses with their signals, keeping errors, timeouts, shard failures.

    Args:
        signals: ``MsearchPlan.signals``.
        responses: ``client.msearch(...)["responses"]``.

    Returns:
        signal -> result (a failed sub-search has no hits and an ``error``).
    """
    if len(signals) != len(responses):
        raise ConfigError(f"{len(responses)} responses for {len(signals)} signals", field="responses")
    out = {}
    for signal, resp in zip(signals, responses):
        err = resp.get("error")
        if err is not None:
            reason = err.get("reason", err) if isinstance(err, Mapping) else err
            out[signal] = SignalResult(signal, [], error=f"{resp.get('status', '')} {reason}".strip())
            continue
        out[signal] = SignalResult(signal, list((resp.get("hits") or {}).get("hits") or []),
                                   bool(resp.get("timed_out")), int((resp.get("_shards") or {}).get("failed", 0)))
    return out


def _weight(config: FusionSettings, signal: str) -> float:
    """The weight of ``signal``'s list; a signal without a weight setting counts 0."""
    return float(getattr(config, f"{signal}_weight", 0.0))


def _normalized(hits: Sequence[Hit]) -> dict[str, float]:
    """Min-max normalized scores by item; rank-based when scores are missing."""
    n = len(hits)
    raw = {str(h["_id"]): (float(h["_score"]) if h.get("_score") is not None else 1.0 - i / n)
           for i, h in enumerate(hits)}
    if not raw:
        return {}
    lo, hi = min(raw.values()), max(raw.values())
    return {k: (1.0 if hi == lo else (v - lo) / (hi - lo)) for k, v in raw.items()}


def _lists(hits_by_signal: Mapping[str, Sequence[Hit] | SignalResult]) -> dict[str, list[Hit]]:
    return {s: list(h.hits if isinstance(h, SignalResult) else h) for s, h in hits_by_signal.items()}


def fuse(hits_by_signal: Mapping[str, Sequence[Hit] | SignalResult], config: FusionSettings = FusionSettings(),
         affinity: Mapping[str, float] | None = None) -> list[Candidate]:
    """Fuse per-signal hit lists into one ranking (formulas in the module docstring).

    Args:
        hits_by_signal: signal -> OpenSearch hits (``_id``, ``_score``, ``_source``) in rank
            order, or the :class:`SignalResult` from :func:`read_msearch`.
        config: the fusion settings.
        affinity: optional item -> raw collaborative affinity (e.g. dot products), used
            instead of the ``cf`` list's scores.

    Returns:
        candidates, best first.
    """
    lists = _lists(hits_by_signal)
    text = [s for s in lists if s != "cf"]
    mode = config.cf_mode if text else "additive"
    k, beta = config.rrf_k, float(config.cf_weight)
    ranks: dict[str, dict[str, int]] = {}
    sources: dict[str, Mapping[str, Any]] = {}
    raw: dict[str, dict[str, float]] = {}
    for signal, hits in lists.items():
        for r, h in enumerate(hits, 1):
            item = str(h["_id"])
            ranks.setdefault(item, {})[signal] = r
            if h.get("_source") and item not in sources:
                sources[item] = h["_source"]
            if h.get("_score") is not None:
                raw.setdefault(item, {})[signal] = float(h["_score"])
    norm = {s: _normalized(h) for s, h in lists.items()}
    aff = _normalized([{"_id": i, "_score": v} for i, v in affinity.items()]) if affinity else norm.get("cf", {})
    out = []
    for item, item_ranks in ranks.items():
        contrib = {}
        for s in text:
            if s in item_ranks:
                w = _weight(config, s)
                contrib[s] = w / (k + item_ranks[s]) if config.method == "rrf" else w * norm[s][item]
        base = sum(contrib.values())
        a = aff.get(item, 0.0)
        if mode == "multiplicative":
            cf_part = base * beta * a
        elif config.method == "rrf":
            cf_part = beta / (k + item_ranks["cf"]) if "cf" in item_ranks and affinity is None else beta * a / (k + 1)
        else:
            cf_part = beta * a
        if cf_part:
            contrib["cf"] = cf_part
        scores = raw.get(item, {})
        out.append(Candidate(item, base + cf_part, scores.get("bm25"), scores.get("dense"), scores.get("cf"),
                             dict(item_ranks), contrib, sources.get(item, {})))
    return sorted(out, key=lambda c: (-c.score, min(c.ranks.values()), c.item_id))


def apply_sort(candidates: Sequence[Candidate], sort: SortKey | None, fields: IntentFields = IntentFields(),
               require: tuple[str, ...] = ("bm25",)) -> list[Candidate]:
    """Re-rank by a sort cue: the relevant candidates by the key, the others after, in fused order.

    Args:
        candidates: fused candidates, best first.
        sort: the intent's sort cue (``None``: unchanged).
        fields: maps the logical key to a ``_source`` field.
        require: a candidate is "relevant" when one of these signals retrieved it (lexical
            matches by default, so a kNN neighbour that is merely cheap cannot jump ahead);
            when none is, all candidates are sorted.

    Returns:
        the re-ranked list; items without the field come last among the relevant ones.
    """
    if sort is None:
        return list(candidates)
    name = fields.sort_field(sort.key)
    relevant = [c for c in candidates if any(s in c.ranks for s in require)] or list(candidates)
    rest = [c for c in candidates if c not in relevant]
    sign = 1.0 if sort.order == "asc" else -1.0

    def key(ic: tuple[int, Candidate]) -> tuple[bool, float, int]:
        value = _sort_value(ic[1].source, name, fields.release_date if sort.key == "year" else None)
        return (value is None, sign * value if value is not None else 0.0, ic[0])

    return [c for _, c in sorted(enumerate(relevant), key=key)] + rest


def _sort_value(source: Mapping[str, Any], name: str, date_field: str | None) -> float | None:
    """The numeric sort value; for "year" a ``YYYY-MM-DD`` date stands in when the year is missing."""
    value = source.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    date = source.get(date_field) if date_field else None
    if isinstance(date, str) and len(date) >= 4 and date[:4].isdigit():
        parts = (date[5:7], date[8:10])
        month, day = (int(p) if p.isdigit() else 1 for p in parts)
        return int(date[:4]) + (month - 1) / 12 + (day - 1) / 372
    return None


def mmr(candidates: Sequence[Candidate], vectors: Mapping[str, np.ndarray], lambda_: float,
        k: int | None = None) -> list[Candidate]:
    """Maximal marginal relevance: trade relevance for diversity over item vectors.

    Greedy: pick ``argmax lambda * score/max_score - (1 - lambda) * max cos(item, picked)``;
    ties keep the fused order. Items without a vector count as dissimilar to everything.

    Args:
        candidates: fused candidates, best first.
        vectors: item -> unit vector (e.g. ``embedding``).
        lambda_: 1.0 = pure relevance, 0.0 = pure diversity.
        k: how many to pick by MMR; the rest follow in fused order.

    Returns:
        the re-ordered candidates (scores unchanged).
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ConfigError("mmr lambda must be in [0, 1]", field="mmr_lambda")
    pool = list(candidates)
    n = len(pool)
    k = n if k is None else min(k, n)
    if n == 0 or k == 0:
        return pool
    top = max(c.score for c in pool) or 1.0
    rel = np.array([c.score / top for c in pool])
    dim = next((len(v) for v in vectors.values()), 0)
    has = np.array([c.item_id in vectors for c in pool])
    mat = np.zeros((n, max(dim, 1)), dtype=np.float64)
    for i, c in enumerate(pool):
        if has[i]:
            mat[i] = vectors[c.item_id]
    sims = mat @ mat.T  # rows without a vector are zero: similar to nothing
    max_sim = np.zeros(n)
    taken = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(k):
        val = np.where(taken, -np.inf, lambda_ * rel - (1.0 - lambda_) * max_sim)
        best = int(np.argmax(val))  # first index on ties: the fused order
        order.append(best)
        taken[best] = True
        max_sim = np.maximum(max_sim, sims[best])
    return [pool[i] for i in order] + [c for i, c in enumerate(pool) if not taken[i]]


def hybrid_signal_scores(hit: Mapping[str, Any], signals: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Per-signal normalized scores of one hit from the ``hybrid_score_explanation`` output.

    The explanation lists only the sub-queries that matched, in sub-query order, without
    naming them: lexical ones are told apart from kNN ones by their description ("within top
    N docs" is kNN); when fewer kNN details than kNN signals are present, the one that best
    explains the combined score (``sum w_i * n_i``) is chosen, the earlier signal on a tie.

    Returns:
        signal -> min-max normalized score for the signals that matched.
    """
    details = (hit.get("_explanation") or {}).get("details") or []
    knn_signals = [s for s in signals if s != "bm25"]
    w = dict(zip(signals, weights))
    out: dict[str, float] = {}
    knn_vals = []
    for d in details:
        inner = (d.get("details") or [{}])[0].get("description", "")
        if "within top" in inner:
            knn_vals.append(float(d["value"]))
        elif "bm25" in signals:
            out["bm25"] = float(d["value"])
    if len(knn_vals) == len(knn_signals):
        out.update(zip(knn_signals, knn_vals))
    elif len(knn_vals) == 1 and knn_signals:
        rest = float(hit.get("_score") or 0.0) - w.get("bm25", 0.0) * out.get("bm25", 0.0)
        s = min(knn_signals, key=lambda s: abs(w[s] * knn_vals[0] - rest))
        out[s] = knn_vals[0]
    return out


def candidates_from_hybrid(response: Mapping[str, Any], signals: Sequence[str], weights: Sequence[float],
                           config: FusionSettings = FusionSettings()) -> list[Candidate]:
    """Candidates from a native ``hybrid`` response, in the same shape as :func:`fuse`'s.

    The node has already combined the scores (``score`` = its score); per-signal scores are
    the normalized ones recovered by :func:`hybrid_signal_scores`, ranks are per-signal orders
    of those, and the collaborative boost is applied like in :func:`fuse` (multiplicative on
    the non-cf part) when ``cf_weight`` > 0 and ``cf`` is a signal.

    Args:
        response: the search response (searched with ``explain=true`` through the pipeline).
        signals, weights: ``HybridSearch.signals`` and the pipeline's normalized weights.
        config: fusion settings (only ``cf_weight`` is used).
    """
    hits = list((response.get("hits") or {}).get("hits") or [])
    per = {str(h["_id"]): hybrid_signal_scores(h, signals, weights) for h in hits}
    ranks: dict[str, dict[str, int]] = {str(h["_id"]): {} for h in hits}
    for s in signals:
        order = sorted((i for i in per if s in per[i]), key=lambda i: (-per[i][s], i))
        for r, i in enumerate(order, 1):
            ranks[i][s] = r
    w = dict(zip(signals, weights))
    out = []
    for h in hits:
        item, sc = str(h["_id"]), per[str(h["_id"])]
        contrib = {s: w[s] * v for s, v in sc.items()}
        score = float(h.get("_score") or 0.0)
        boost = score * float(config.cf_weight) * sc.get("cf", 0.0) if config.cf_mode == "multiplicative" else 0.0
        if boost:
            contrib["cf"] = contrib.get("cf", 0.0) + boost
        out.append(Candidate(item, score + boost, sc.get("bm25"), sc.get("dense"), sc.get("cf"), ranks[item],
                             contrib, h.get("_source") or {}))
    return sorted(out, key=lambda c: (-c.score, min(c.ranks.values(), default=0), c.item_id))
