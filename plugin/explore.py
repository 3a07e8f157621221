"""Logged exploration: random swaps of adjacent results on a share of served pages (pure).

A ranker puts what it believes relevant on top, so clicks per position mix the examination
of a position with the relevance of what sits there. Swapping neighbours at random moves items
by a place or two independently of their relevance; the query log records where each item was
shown and the rank the ranker gave it (``served[].position`` / ``served[].ranked``), and
``osreco learn`` estimates the position bias from that (:mod:`osreco.learning.clicks`).

An explored page is swapped in two rounds, the results paired from the first one on in one
round and from the second one on in the other (which round comes first is a coin), each pair
swapped with probability one half: every item moves at most two places, and every position is
compared with the two on either side of it, so the position curve is not only a chain of
neighbour ratios whose errors add up.

Whether a page is explored and how is drawn from a hash of the request (:func:`page_seed`: the
day, endpoint, user pseudonym, query, page): independent of relevance, the same page on a reload
the same day, and the same in two deployments served the same requests (the arms of
``osreco simulate``).
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timezone

__all__ = ["explore_order", "page_seed"]


def page_seed(endpoint: str, **request: object) -> str:
    """The exploration seed of a request: today's UTC date, the endpoint and the request's fields."""
    fields = "|".join(f"{k}={request[k]}" for k in sorted(request) if request[k] is not None)
    return f"{datetime.now(timezone.utc).date().isoformat()}|{endpoint}|{fields}"


def explore_order(seed: str, n: int, fraction: float) -> list[int]:
    """The shown order of a page of ``n`` results: indexes into the ranked page.

    Args:
        seed: seeds the draws (:func:`page_seed`).
        n: results on the page.
        fraction: share of pages explored (0 = never: the identity).

    Returns:
        ``order`` with ``order[j]`` = the ranked index shown at place ``j`` (the identity when the
        page is not explored).

    >>> explore_order("q1", 4, 0.0)
    [0, 1, 2, 3]
    >>> sorted(explore_order("q1", 5, 1.0))
    [0, 1, 2, 3, 4]
    """
    order = list(range(n))
    if fraction <= 0.0 or n < 2:
        return order
    rng = random.Random(int.from_bytes(hashlib.sha256(f"explore:{seed}".encode()).digest()[:8], "big"))
    if rng.random() >= fraction:
        return order
    first = rng.randrange(2)
    for offset in (first, 1 - first):
        for j in range(offset, n - 1, 2):
            if rng.random() < 0.5:
                order[j], order[j + 1] = order[j + 1], order[j]
    return order
