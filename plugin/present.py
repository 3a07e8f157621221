"""Ranked candidates -> the results of a response: scores per signal, the filters each result
satisfies, each signal's contribution and "because you liked" (the user's history items whose
CF factors are closest to the result's)."""

from __future__ import annotations

from typing import Any

from osreco.plugin.explain import HistoryItem, explain
from osreco.plugin.fusion import Candidate, SignalResult
from osreco.plugin.intent.types import Intent, IntentFields
from osreco.plugin.users import UserContext, Users

__all__ = ["Presenter"]


class Presenter:
    """Turns ranked candidates into response results.

    Args:
        fields: index field names (the ``title`` shown).
        users: the CF model's item factors ("because you liked" needs them).
    """

    def __init__(self, fields: IntentFields, users: Users):
        self.fields, self.users = fields, users

    def present(self, ranked: list[Candidate], intent: Intent | None, user: UserContext | None,
                history: SignalResult | None, affinity: dict[str, float], offset: int = 0) -> list[dict[str, Any]]:
        """Results with scores and explanations, ranked from ``offset + 1``.

        Args:
            ranked: the page's candidates, best first.
            intent: the request's intent (``None``: no constraints to check).
            user: the known user, or ``None``.
            history: the ``history`` lookup's hits (titles of the user's items).
            affinity: item -> ``user . item_factor`` (shown as ``cf_score`` when known).
            offset: how many results came before this page.
        """
        items = []
        liked = self.history_items(user, history)
        factors = self.users.factors([c.item_id for c in ranked]) if liked else {}
        blank = intent or Intent(query="", text="")
        for rank, c in enumerate(ranked, offset + 1):
            e = explain(c, blank, item_vector=factors.get(c.item_id), history=liked).to_dict()
            items.append({"item_id": c.item_id, "rank": rank, "score": round(c.score, 6),
                          "bm25_score": c.bm25_score, "dense_score": c.dense_score,
                          "cf_score": affinity.get(c.item_id, c.cf_score),
                          "title": c.source.get(self.fields.title),
                          "filters_satisfied": e["satisfied"], "filters_unsatisfied": e["unsatisfied"],
                          "contributions": e["contributions"],
                          "because_you_liked": e["because_you_liked"], "source": dict(c.source),
                          **({"matched": e["matched"]} if "matched" in e else {})})
        return items

    def history_items(self, user: UserContext | None, history: SignalResult | None) -> list[HistoryItem]:
        """The user's history with titles (from the lookup; the id when missing) and CF factors."""
        if user is None or not user.history or self.users.cf_model is None:
            return []
        titles = {str(h["_id"]): (h.get("_source") or {}).get(self.fields.title, "") for h in
                  (history.hits if history else [])}
        factors = self.users.factors(list(user.history))
        return [HistoryItem(i, titles.get(i, i), factors.get(i)) for i in user.history]
