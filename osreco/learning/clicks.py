"""Logged traffic -> what was shown and clicked per request, the position model's input, and
inverse-propensity weighted training data for the encoder and the reranker (pure Python).

What a request showed comes from its ``impression`` events (one per shown item, with its
position); without them, from the query log: the ``served`` entries on the requested page.
A click is a ``click`` (or ``add_to_cart``/``purchase``) event with the request's ``query_id``.
Where the sidecar explored (``OSRECO_EXPLORE_FRACTION``: random adjacent swaps), a ``served``
entry's ``position`` is where the item was shown and its ``ranked`` the rank the ranker gave it.

The position model's relevance key (:func:`position_model`): on a log with enough explored
impressions, the ranker's rank on the endpoint (the item ranked ``r`` is as relevant on average
wherever exploration showed it, so position is identified without confounding); otherwise the
query text (the endpoint and user for recommendations), which the ranking confounds.

Training data: per search request with a click, each clicked item is a positive weighted by
the inverse propensity of the position it was clicked at (a click deep in the list says more
than one at the top, which is examined anyway), and each shown item above the lowest click
that was not clicked (shown and passed over), plus explicit ``skip`` events, is a negative.
Rows are written in the shape ``osreco train`` reads (``user_id`` = the pseudonym).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from osreco.learning.propensity import Impression, PositionModel, fit_position_model

__all__ = ["CLICK_KINDS", "MIN_EXPLORED", "ShownRequest", "shown_requests", "impressions", "position_model",
           "clicked_by_query", "training_rows"]

CLICK_KINDS = frozenset({"click", "add_to_cart", "purchase"})
MIN_EXPLORED = 200
"""Explored impressions (shown away from their rank) a log needs before relevance is keyed by rank."""


@dataclass(frozen=True)
class ShownRequest:
    """One request as the user saw it: item -> position shown, and the items clicked.

    ``ranked``: item -> the ranker's rank where exploration showed it elsewhere (absent: shown
    at its rank).
    """

    query_id: str
    user_key: str
    query: str
    query_class: str
    endpoint: str
    shown: dict[str, int]
    clicked: frozenset[str]
    skipped: frozenset[str]
    timestamp: Any = None
    ranked: dict[str, int] = field(default_factory=dict)

    def rank_of(self, item: str) -> int:
        """The ranker's rank of a shown ``item`` (its shown position when not explored)."""
        return self.ranked.get(item, self.shown[item])


def clicked_by_query(events: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """``query_id`` -> items clicked (click, add to cart, purchase) in that request."""
    out: dict[str, set[str]] = {}
    for e in events:
        if e.get("query_id") and e.get("kind") in CLICK_KINDS:
            out.setdefault(str(e["query_id"]), set()).add(str(e["item_id"]))
    return out


def _page_of(doc: Mapping[str, Any]) -> dict[str, int]:
    k, page = int(doc.get("k") or 10), int(doc.get("page") or 1)
    lo, hi = (page - 1) * k + 1, page * k
    return {str(c["item_id"]): int(c["position"]) for c in doc.get("served") or []
            if isinstance(c, Mapping) and c.get("item_id") is not None
            and isinstance(c.get("position"), int) and lo <= c["position"] <= hi}


def _explored_ranks(doc: Mapping[str, Any]) -> dict[str, int]:
    """item -> the ranker's rank, for the ``served`` entries exploration showed elsewhere."""
    return {str(c["item_id"]): int(c["ranked"]) for c in doc.get("served") or []
            if isinstance(c, Mapping) and c.get("item_id") is not None and isinstance(c.get("ranked"), int)
            and c["ranked"] != c.get("position")}


def shown_requests(queries: Iterable[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]) -> list[ShownRequest]:
    """Each logged request with what it showed and what was clicked or skipped in it."""
    shown: dict[str, dict[str, int]] = {}
    skipped: dict[str, set[str]] = {}
    for e in events:
        qid = e.get("query_id")
        if not qid:
            continue
        if e.get("kind") == "impression" and isinstance(e.get("position"), int):
            shown.setdefault(str(qid), {}).setdefault(str(e["item_id"]), int(e["position"]))
        elif e.get("kind") == "skip":
            skipped.setdefault(str(qid), set()).add(str(e["item_id"]))
    clicks = clicked_by_query(events)
    out = []
    for doc in queries:
        qid = str(doc.get("query_id") or "")
        seen = shown.get(qid) or _page_of(doc)
        if not qid or not seen:
            continue
        ranked = {i: r for i, r in _explored_ranks(doc).items() if i in seen}
        out.append(ShownRequest(qid, str(doc.get("user_key") or ""), str(doc.get("query") or "").strip(),
                                str(doc.get("query_class") or "none"), str(doc.get("endpoint") or ""), seen,
                                frozenset(clicks.get(qid, set()) & set(seen)),
                                frozenset(skipped.get(qid, set())), doc.get("timestamp"), ranked))
    return out


def impressions(requests: Iterable[ShownRequest], by: str = "query") -> list[Impression]:
    """The position model's input: every shown item with its relevance key.

    Args:
        by: ``query``: (query text, item), or (endpoint and user, item) for a request without
            text (recommendations); ``rank``: (endpoint, the ranker's rank), valid only where
            exploration moved items independently of their relevance.
    """
    if by not in ("query", "rank"):
        raise ValueError(f"impressions are keyed by 'query' or 'rank', not {by!r}")
    out: list[Impression] = []
    for r in requests:
        q = r.query.casefold() if r.query else f"{r.endpoint}:{r.user_key}"
        out.extend(Impression((r.endpoint, f"rank {r.rank_of(item)}") if by == "rank" else (q, item), pos,
                              item in r.clicked) for item, pos in r.shown.items())
    return out


def position_model(requests: Sequence[ShownRequest], min_explored: int = MIN_EXPLORED,
                   **fit: Any) -> PositionModel:
    """The position model of a log, relevance keyed by rank when it holds at least ``min_explored``
    explored impressions, else by query (see the module docstring).

    Args:
        fit: passed to :func:`osreco.learning.propensity.fit_position_model`.
    """
    explored = sum(len(r.ranked) for r in requests)
    by = "rank" if explored >= min_explored else "query"
    return replace(fit_position_model(impressions(requests, by), **fit), keyed_by=by, explored=explored)


def training_rows(requests: Iterable[ShownRequest], model: PositionModel, clip: float = 10.0
                  ) -> tuple[list[dict[str, Any]], int]:
    """IPW-weighted click rows and skip rows of the search requests (see the module docstring).

    Returns:
        ``(rows, pairs)``: rows in ``osreco train``'s events shape with a ``weight``; ``pairs``
        = clicked x passed-over pairs they make.
    """
    rows: list[dict[str, Any]] = []
    pairs = 0
    for r in requests:
        if not r.query or not r.clicked:
            continue
        deepest = max(r.shown[i] for i in r.clicked)
        passed = {i for i, p in r.shown.items() if p < deepest and i not in r.clicked} | (r.skipped - r.clicked)
        pairs += len(r.clicked) * len(passed)
        base = {"user_id": r.user_key, "query": r.query, "query_id": r.query_id, "timestamp": r.timestamp or 0}
        for item in sorted(r.clicked):
            rows.append({**base, "item_id": item, "kind": "click", "position": r.shown[item],
                         "weight": round(model.weight(r.shown[item], clip), 4)})
        for item in sorted(passed):
            rows.append({**base, "item_id": item, "kind": "skip", "position": r.shown.get(item), "weight": 1.0})
    return rows, pairs

