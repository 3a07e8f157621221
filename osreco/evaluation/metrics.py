"""Ranking-quality metrics, pure and exact: Recall@k, NDCG@k (graded and binary), coverage, violations.

The one metrics module of the project: ``osreco eval`` (graded NDCG, capped recall), the
promotion gate (the same) and ``osreco cf eval`` (binary NDCG, uncapped recall).

Conventions:

- ``ranked`` is the list of item ids a system returned, best first; only its first ``k``
  count. Duplicates count once (at their first position).
- ``grades`` maps each *relevant* item id to a positive grade (here: the user's rating).
  Items not in ``grades`` have grade 0.
- Graded NDCG (:func:`ndcg_graded_at_k`) uses linear gain (gain = grade) and the log2
  discount ``1 / log2(rank + 1)`` (rank 1-based), normalized by the DCG of the ideal
  ordering of ``grades`` cut at ``k``. Binary NDCG (:func:`ndcg_binary_at_k`) is the same
  with gain 1 for every relevant item.
- Capped recall (:func:`recall_capped_at_k`) is ``hits / min(k, |relevant|)`` (Liang et al.,
  2018), so a perfect list scores 1 even when a user has more than ``k`` relevant items;
  uncapped recall (:func:`recall_uncapped_at_k`) is ``hits / |relevant|``.
- Per-query values are averaged with :func:`mean` (macro average); violation rate is a
  micro average over every returned result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["dcg_at_k", "ndcg_graded_at_k", "ndcg_binary_at_k", "recall_capped_at_k", "recall_uncapped_at_k",
           "coverage", "violation_rate", "mean"]


def _top_k(ranked: Sequence[str], k: int) -> list[str]:
    """The first ``k`` distinct ids of ``ranked``.

    Raises:
        ValueError: when ``k`` < 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    seen: set[str] = set()
    out: list[str] = []
    for item_id in ranked:
        if item_id not in seen:
            seen.add(item_id)
            out.append(item_id)
            if len(out) == k:
                break
    return out


def dcg_at_k(gains: Sequence[float], k: int) -> float:
    """Discounted cumulative gain of a list of gains (best first), cut at ``k``.

    Args:
        gains: gain of each position, position 1 first.
        k: cut-off.

    Returns:
        ``sum(gain_i / log2(i + 1))`` over positions ``i = 1..k``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))


def ndcg_graded_at_k(ranked: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    """Graded NDCG@k of one ranked list.

    Args:
        ranked: returned item ids, best first.
        grades: relevant item id -> positive grade.
        k: cut-off.

    Returns:
        A value in [0, 1]; 0.0 when ``grades`` is empty (nothing could be found).

    Raises:
        ValueError: on ``k`` < 1 or a negative grade.
    """
    if any(g < 0 for g in grades.values()):
        raise ValueError("grades must be >= 0")
    ideal = dcg_at_k(sorted(grades.values(), reverse=True), k)
    if ideal == 0.0:
        return 0.0
    gains = [float(grades.get(item_id, 0.0)) for item_id in _top_k(ranked, k)]
    return dcg_at_k(gains, k) / ideal


def ndcg_binary_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Binary-relevance NDCG@k of one ranked list: gain 1 per relevant item.

    Args:
        ranked: returned item ids, best first.
        relevant: the relevant item ids.
        k: cut-off.

    Returns:
        A value in [0, 1]; the ideal list puts ``min(k, |relevant|)`` hits first; 0.0 when
        ``relevant`` is empty.

    Raises:
        ValueError: on ``k`` < 1.
    """
    rel = set(relevant)
    ideal = dcg_at_k([1.0] * min(k, len(rel)), k)
    if ideal == 0.0:
        return 0.0
    return dcg_at_k([1.0 if item_id in rel else 0.0 for item_id in _top_k(ranked, k)], k) / ideal


def _hits(ranked: Sequence[str], relevant: set[str], k: int) -> int:
    """How many of the first ``k`` distinct ids of ``ranked`` are in ``relevant``."""
    return sum(1 for item_id in _top_k(ranked, k) if item_id in relevant)


def recall_uncapped_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Recall@k normalized by ``|relevant|`` (a user with more than ``k`` relevant items cannot reach 1).

    Args:
        ranked: returned item ids, best first.
        relevant: the relevant item ids.
        k: cut-off.

    Returns:
        A value in [0, 1]; 0.0 when ``relevant`` is empty.
    """
    rel = set(relevant)
    return _hits(ranked, rel, k) / len(rel) if rel else 0.0


def recall_capped_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Recall@k normalized by ``min(k, |relevant|)``.

    Args:
        ranked: returned item ids, best first.
        relevant: the relevant item ids.
        k: cut-off.

    Returns:
        A value in [0, 1]; 0.0 when ``relevant`` is empty.
    """
    rel = set(relevant)
    return _hits(ranked, rel, k) / min(k, len(rel)) if rel else 0.0


def coverage(ranked_lists: Iterable[Sequence[str]], catalog_size: int, k: int) -> float:
    """Catalog coverage: the share of the catalog that appears in any top-k list.

    Args:
        ranked_lists: one ranked list per user or query.
        catalog_size: number of items that could have been recommended (> 0).
        k: cut-off applied to every list.

    Returns:
        ``|union of top-k lists| / catalog_size`` in [0, 1].

    Raises:
        ValueError: when ``catalog_size`` < 1.
    """
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be >= 1, got {catalog_size}")
    shown: set[str] = set()
    for ranked in ranked_lists:
        shown.update(_top_k(ranked, k))
    return min(1.0, len(shown) / catalog_size)


def violation_rate(ranked_lists: Sequence[Sequence[str]],
                   satisfies: Sequence[Callable[[str], bool]], k: int) -> float:
    """Share of all returned top-k results that violate their query's stated constraints.

    Args:
        ranked_lists: one ranked list per query.
        satisfies: one predicate per query; ``satisfies[i](item_id)`` is True when the item
            meets every constraint of query ``i``.
        k: cut-off.

    Returns:
        ``violating results / returned results`` (micro average); 0.0 when nothing came back.

    Raises:
        ValueError: when the two sequences differ in length.
    """
    if len(ranked_lists) != len(satisfies):
        raise ValueError(f"{len(ranked_lists)} ranked lists but {len(satisfies)} predicates")
    returned = violating = 0
    for ranked, ok in zip(ranked_lists, satisfies):
        top = _top_k(ranked, k)
        returned += len(top)
        violating += sum(1 for item_id in top if not ok(item_id))
    return violating / returned if returned else 0.0


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; 0.0 for no values (a variant that was never asked scores 0)."""
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0
