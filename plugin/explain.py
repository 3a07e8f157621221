"""Why each result is there (pure): the constraints it satisfies, each signal's contribution,
and "because you liked X" — the items in the user's history closest to it.

Example:
    >>> e = explain(candidate, intent, item_vector=vec, history=[HistoryItem("1", "Toy Story", v1)])
    >>> e.to_dict()
    {'satisfied': ['genres = sci-fi', 'year in [1990, 1999]'], 'unsatisfied': [],
     'contributions': {'bm25': 0.0164, 'dense': 0.0161}, 'because_you_liked': [...]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osreco.plugin.fusion import Candidate
from osreco.plugin.intent.types import Intent, RangeFilter

_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
SIGNAL_NOTES = {"image": "looks like your photo", "text_image": "its picture matches your words"}
"""What an image signal that retrieved a result says about it (``matched`` in the explanation)."""


def signal_notes(contributions: Mapping[str, float]) -> list[str]:
    """The sentences of the image signals that contributed to a result, strongest first."""
    return [SIGNAL_NOTES[s] for s, v in sorted(contributions.items(), key=lambda kv: -kv[1])
            if s in SIGNAL_NOTES and v > 0]


@dataclass(frozen=True)
class HistoryItem:
    """An item the user interacted with, and its vector (same space as the results' vectors)."""

    item_id: str
    title: str
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Liked:
    """One "because you liked" entry."""

    item_id: str
    title: str
    similarity: float


@dataclass(frozen=True)
class Explanation:
    """The explanation of one result (see the module docstring)."""

    satisfied: tuple[str, ...]
    unsatisfied: tuple[str, ...]
    contributions: Mapping[str, float]
    because_you_liked: tuple[Liked, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form; contributions rounded to 6 decimals; ``matched`` only when an image signal
        contributed ("looks like your photo")."""
        out = {"satisfied": list(self.satisfied), "unsatisfied": list(self.unsatisfied),
               "contributions": {k: round(v, 6) for k, v in self.contributions.items()},
               "because_you_liked": [{"item_id": x.item_id, "title": x.title, "similarity": x.similarity}
                                     for x in self.because_you_liked]}
        notes = signal_notes(self.contributions)
        if notes:
            out["matched"] = notes
        return out


def _num(x: float) -> str:
    return f"{x:g}"


def range_label(r: RangeFilter) -> str:
    """``price < 50``, ``year in [1990, 1999]``, ``price > 20 and < 50``."""
    b = r.bounds()
    if set(b) == {"gte", "lte"}:
        return f"{r.field} in [{_num(b['gte'])}, {_num(b['lte'])}]"
    return f"{r.field} " + " and ".join(f"{_OPS[op]} {_num(v)}" for op, v in b.items())


def _values(source: Mapping[str, Any], name: str) -> set[str]:
    v = source.get(name)
    items = v if isinstance(v, (list, tuple)) else [] if v is None else [v]
    return {str(x).strip().lower() for x in items}


def check_filters(intent: Intent, source: Mapping[str, Any], all_of: tuple[str, ...] = ("genres",)
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Check a document against the intent's facet values, ranges and exclusions.

    Args:
        intent: the intent.
        source: the document's ``_source``.
        all_of: facet fields whose values are each required (as in the query builder).

    Returns:
        ``(satisfied, unsatisfied)`` readable labels, in intent order.
    """
    ok: list[str] = []
    bad: list[str] = []
    for name, wanted in intent.terms().items():
        have = _values(source, name)
        groups = [[v] for v in wanted] if name in all_of or len(wanted) == 1 else [wanted]
        for g in groups:
            label = f"{name} = {g[0]}" if len(g) == 1 else f"{name} in {', '.join(g)}"
            (ok if have & set(g) else bad).append(label)
    for r in intent.ranges:
        x = source.get(r.field)
        good = isinstance(x, (int, float)) and not isinstance(x, bool) and r.contains(float(x))
        (ok if good else bad).append(range_label(r))
    for name, unwanted in intent.excluded_terms().items():
        have = _values(source, name)
        for v in unwanted:
            (bad if v in have else ok).append(f"{name} is not {v}")
    return tuple(ok), tuple(bad)


def because_you_liked(item_vector: np.ndarray | None, history: Sequence[HistoryItem], n: int = 2,
                      min_similarity: float = 0.3, exclude: str | None = None) -> tuple[Liked, ...]:
    """The history items most similar (cosine) to a result.

    Args:
        item_vector: the result's vector (``None``: nothing to say).
        history: the user's items with vectors (items without one are skipped).
        n: at most this many.
        min_similarity: leave out weaker links.
        exclude: an item id never to cite (the result itself).

    Returns:
        entries by similarity, highest first (ties by item id), similarity rounded to 4 places.
    """
    if item_vector is None or n <= 0:
        return ()
    v = np.asarray(item_vector, dtype=np.float64)
    vn = np.linalg.norm(v)
    if vn == 0:
        return ()
    scored = []
    for h in history:
        if h.vector is None or h.item_id == exclude:
            continue
        u = np.asarray(h.vector, dtype=np.float64)
        un = np.linalg.norm(u)
        sim = float(v @ u / (vn * un)) if un else 0.0
        if sim >= min_similarity:
            scored.append(Liked(h.item_id, h.title, round(sim, 4)))
    scored.sort(key=lambda x: (-x.similarity, x.item_id))
    return tuple(scored[:n])


def explain(candidate: Candidate, intent: Intent, item_vector: np.ndarray | None = None,
            history: Sequence[HistoryItem] = (), n_liked: int = 2, min_similarity: float = 0.3,
            all_of: tuple[str, ...] = ("genres",)) -> Explanation:
    """The explanation of one fused candidate.

    Args:
        candidate: a result from :func:`osreco.plugin.fusion.fuse`.
        intent: the request's intent.
        item_vector: the candidate's vector in the history's space (e.g. ``cf_vector``).
        history: the user's recent items with vectors.
        n_liked, min_similarity: see :func:`because_you_liked`.
        all_of: see :func:`check_filters`.

    Returns:
        the explanation.
    """
    ok, bad = check_filters(intent, candidate.source, all_of)
    liked = because_you_liked(item_vector, history, n_liked, min_similarity, exclude=candidate.item_id)
    return Explanation(ok, bad, dict(candidate.contributions), liked)


def signal_contributions(candidate: Candidate) -> dict[str, float]:
    """Each signal's share of the score as a fraction of it (sums to 1; empty for score 0)."""
    total = sum(candidate.contributions.values())
    return {k: round(v / total, 4) for k, v in candidate.contributions.items()} if total else {}


__all__ = ["Explanation", "HistoryItem", "Liked", "because_you_liked", "check_filters", "explain", "range_label",
           "signal_contributions"]
