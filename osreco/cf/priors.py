"""Item priors in the item index: time-decayed ``popularity``, shrunk ``rating_avg`` and the
co-engagement neighbours (``cf_neighbors`` / ``cf_neighbor_scores``) that ``osreco cf train``
writes and the sidecar serves.

Popularity is stored *relative to a reference time* ``ref`` (the newest training event,
recorded in the training metadata as ``popularity_ref``): an event at time ``t`` adds
``2 ** ((t - ref) / half_life)``. Training writes the sum over its events; the events worker
adds new events with :func:`event_delta` through :func:`bump_popularity`. Because every item's
score would be multiplied by the same ``2 ** ((ref - now) / half_life)`` to express it "as of
now", ranking by the stored number is ranking by decayed popularity at any time, and no
periodic re-decay pass is needed. Retraining moves ``ref`` to the newest event.

Example:
    >>> ensure_prior_fields(client, "movies")
    >>> write_priors(client, "movies", priors)
    >>> ref, half_life = popularity_clock(read_meta(client, store))
    >>> bump_popularity(client, "movies", {"42": event_delta(time.time(), ref, half_life)})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from opensearchpy import OpenSearch
from scipy import sparse

from osreco.cf.interactions import Interaction
from osreco.ingest.bulk import BulkReport, RetryPolicy, bulk_write
from osreco.ingest.errors import ConfigError

if TYPE_CHECKING:
    from osreco.cf.model import CFModel

__all__ = ["PRIOR_FIELDS", "ItemPriors", "popularity_at", "rating_averages", "top_neighbors", "event_delta",
           "ensure_prior_fields", "write_priors", "bump_popularity", "priors_from_model", "popularity_clock"]

PRIOR_FIELDS: dict[str, dict[str, object]] = {
    "popularity": {"type": "float"},
    "rating_avg": {"type": "float"},
    "cf_neighbors": {"type": "keyword"},
    "cf_neighbor_scores": {"type": "float", "index": False},
}
_BUMP_SCRIPT = ("if (ctx._source.popularity == null) { ctx._source.popularity = params.d } "
                "else { ctx._source.popularity += params.d }")


@dataclass
class ItemPriors:
    """Per-item priors aligned with ``item_ids`` (what :func:`write_priors` stores).

    Args:
        item_ids: the items (every indexed item: those without interactions get popularity 0).
        popularity: stored popularity (relative to ``ref``).
        ref: the reference time (epoch seconds) of ``popularity``.
        half_life_days: the decay half-life.
        rating_avg: shrunk average rating per item, or ``None`` when the data has no ratings.
        neighbors: per item, ``(neighbour ids, scores)`` best first (empty lists when none).
    """

    item_ids: Sequence[str]
    popularity: np.ndarray
    ref: float
    half_life_days: float
    rating_avg: np.ndarray | None = None
    neighbors: Sequence[tuple[list[str], list[float]]] = ()


MAX_HALF_LIVES = 64.0
"""An event more than this many half-lives after the reference time adds ``2 ** 64`` (the stored
float32 ``popularity`` would overflow to infinity otherwise): such events all count alike, far above
anything trained, until the next ``osreco cf train`` moves the reference time."""


def event_delta(timestamp: float, ref: float, half_life_days: float) -> float:
    """What one event at ``timestamp`` adds to the stored popularity: ``2 ** ((t - ref) / half_life)``,
    the exponent capped at :data:`MAX_HALF_LIVES`."""
    if half_life_days <= 0:
        raise ConfigError("half_life_days must be > 0", field="half_life_days")
    return float(2.0 ** min((timestamp - ref) / (half_life_days * 86400.0), MAX_HALF_LIVES))


def popularity_at(interactions: Iterable[Interaction], item_ids: Sequence[str], half_life_days: float,
                  ref: float | None = None) -> tuple[np.ndarray, float]:
    """Stored popularity of every item: the sum of :func:`event_delta` over its events.

    Args:
        ref: the reference time; default the newest event.

    Returns:
        ``(scores aligned with item_ids, ref)``; items without events score 0.
    """
    events = list(interactions)
    ref = ref if ref is not None else max((e.timestamp for e in events), default=0.0)
    pos = {it: i for i, it in enumerate(item_ids)}
    scores = np.zeros(len(item_ids), dtype=np.float64)
    for e in events:
        i = pos.get(e.item_id)
        if i is not None:
            scores[i] += event_delta(e.timestamp, ref, half_life_days)
    return scores, ref


def rating_averages(interactions: Iterable[Interaction], item_ids: Sequence[str],
                    prior_count: float = 10.0) -> np.ndarray | None:
    """Bayesian average rating per item: ``(sum + m * mean) / (n + m)`` with ``m = prior_count``.

    Returns:
        float64 averages aligned with ``item_ids`` (the global mean for unrated items), or
        ``None`` when every value is the same (implicit data: there are no ratings to average).
    """
    events = list(interactions)
    values = np.asarray([e.value for e in events], dtype=np.float64)
    if len(values) == 0 or float(values.min()) == float(values.max()):
        return None
    pos = {it: i for i, it in enumerate(item_ids)}
    sums = np.zeros(len(item_ids), dtype=np.float64)
    counts = np.zeros(len(item_ids), dtype=np.float64)
    for e, v in zip(events, values):
        i = pos.get(e.item_id)
        if i is not None:
            sums[i] += v
            counts[i] += 1.0
    mean = float(values.mean())
    return (sums + prior_count * mean) / (counts + prior_count)


def top_neighbors(item_item: np.ndarray | sparse.csr_matrix | None, item_ids: Sequence[str],
                  n: int) -> list[tuple[list[str], list[float]]]:
    """Each item's ``n`` strongest positive item-item weights (row ``i`` = "users of i also used").

    Args:
        item_item: dense EASE weights, sparse co-occurrence, or ``None`` (no neighbours).
        n: neighbours kept per item (0 keeps none).

    Returns:
        Per item, ``(neighbour ids, weights)`` best first.
    """
    if item_item is None or n <= 0:
        return [([], []) for _ in item_ids]
    ids = np.asarray(item_ids, dtype=object)
    csr = sparse.csr_matrix(item_item) if sparse.issparse(item_item) else None
    dense = np.asarray(item_item) if csr is None else np.zeros((0, 0))
    out: list[tuple[list[str], list[float]]] = []
    for i in range(len(ids)):
        if csr is not None:
            start, end = csr.indptr[i], csr.indptr[i + 1]
            cols, vals = csr.indices[start:end], csr.data[start:end].astype(np.float64)
        else:
            vals = np.asarray(dense[i], dtype=np.float64)
            cols = np.flatnonzero(vals > 0)
            vals = vals[cols]
        keep = vals > 0
        cols, vals = cols[keep], vals[keep]
        order = np.lexsort((cols, -vals))[:n]
        out.append(([str(ids[c]) for c in cols[order]], [round(float(v), 6) for v in vals[order]]))
    return out


def popularity_clock(meta: Mapping[str, object] | None) -> tuple[float, float] | None:
    """``(popularity_ref, half_life_days)`` of the latest training metadata
    (:func:`osreco.cf.store.read_meta`), or ``None`` before a training that wrote popularity."""
    ref = meta.get("popularity_ref") if meta else None
    half_life = meta.get("popularity_half_life_days") if meta else None
    if not isinstance(ref, (int, float)):
        return None
    return float(ref), float(half_life) if isinstance(half_life, (int, float)) else 30.0


def ensure_prior_fields(client: OpenSearch, item_index: str) -> None:
    """Add the prior fields to an existing item index's mapping (``put_mapping``; idempotent)."""
    client.indices.put_mapping(index=item_index, body={"properties": PRIOR_FIELDS})


def write_priors(client: OpenSearch, item_index: str, priors: ItemPriors, chunk_size: int = 500,
                 progress: Callable[[int], None] | None = None) -> BulkReport:
    """Partial-update ``popularity``, ``rating_avg`` (when known) and the neighbours on every item.

    Goes through the one bulk path (:func:`osreco.ingest.bulk.bulk_write`); items missing from
    the index are counted in the report, other fields are untouched.
    """
    ensure_prior_fields(client, item_index)
    neighbors = list(priors.neighbors) or [([], []) for _ in priors.item_ids]

    def doc(i: int) -> dict[str, object]:
        out: dict[str, object] = {"popularity": round(float(priors.popularity[i]), 6)}
        if priors.rating_avg is not None:
            out["rating_avg"] = round(float(priors.rating_avg[i]), 4)
        ids, scores = neighbors[i]
        out["cf_neighbors"], out["cf_neighbor_scores"] = ids, scores
        return out

    actions = ({"_op_type": "update", "_index": item_index, "_id": str(item), "doc": doc(i)}
               for i, item in enumerate(priors.item_ids))
    report = bulk_write(client, actions, RetryPolicy(), chunk_size=chunk_size, progress=progress)
    client.indices.refresh(index=item_index)
    return report


def bump_popularity(client: OpenSearch, item_index: str, deltas: Mapping[str, float]) -> None:
    """Add ``deltas`` (stored units, see :func:`event_delta`) to the items' ``popularity``.

    One scripted bulk update per call; an item missing from the index is skipped.

    Raises:
        BulkError: the node refused the updates for good.
    """
    from osreco.ingest.errors import BulkError

    actions = ({"_op_type": "update", "_index": item_index, "_id": str(item),
                "script": {"source": _BUMP_SCRIPT, "lang": "painless", "params": {"d": float(d)}}}
               for item, d in deltas.items() if d)
    report = bulk_write(client, actions, RetryPolicy())
    if report.failed:
        item, why = next(iter(report.failed.items()))
        raise BulkError(f"{len(report.failed)} popularity updates failed, e.g. {item}: {why}", index=item_index,
                        fix="check the node's health and resend the events")


def priors_from_model(model: CFModel, interactions: Sequence[Interaction], neighbors: int,
                      prior_count: float = 10.0) -> ItemPriors:
    """The priors of a freshly trained model: its popularity, ratings and top neighbours.

    Args:
        model: the trained model (its ``item_ids`` are every indexed item).
        interactions: the training interactions (for the reference time and the ratings).
        neighbors: neighbours kept per item (``osreco cf train --neighbors``).
        prior_count: pseudo-count of the rating average's shrinkage.
    """
    ids = [str(i) for i in model.item_ids.tolist()]
    half_life = model.config.half_life_days
    popularity, ref = popularity_at(interactions, ids, half_life)
    return ItemPriors(ids, popularity, ref, half_life, rating_averages(interactions, ids, prior_count),
                      top_neighbors(model.item_item, ids, neighbors))
