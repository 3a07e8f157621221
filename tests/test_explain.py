"""Explanations: satisfied constraints, contributions, "because you liked" (exact values)."""

from __future__ import annotations

import numpy as np

from osreco.plugin.explain import (
    HistoryItem,
    Liked,
    because_you_liked,
    check_filters,
    explain,
    range_label,
    signal_contributions,
)
from osreco.plugin.fusion import Candidate
from osreco.plugin.intent.types import FacetMatch, Intent, RangeFilter

INTENT = Intent(query="90s sci-fi adventure, no horror", text="",
                filters=(FacetMatch("genres", "sci-fi"), FacetMatch("genres", "adventure")),
                ranges=(RangeFilter("year", gte=1990.0, lte=1999.0),),
                exclusions=(FacetMatch("genres", "horror"),))


def test_check_filters_labels():
    doc = {"genres": ["Sci-Fi", "action"], "year": 1997}
    assert check_filters(INTENT, doc) == (("genres = sci-fi", "year in [1990, 1999]", "genres is not horror"),
                                          ("genres = adventure",))
    shop = Intent(query="", text="", filters=(FacetMatch("brand", "sony"), FacetMatch("brand", "bose")),
                  ranges=(RangeFilter("price", gt=20.0, lt=50.0),), exclusions=(FacetMatch("color", "red"),))
    assert check_filters(shop, {"brand": "bose", "price": 50, "color": "red"}) == (
        ("brand in sony, bose",), ("price > 20 and < 50", "color is not red"))
    assert check_filters(shop, {"price": True}) == (  # a boolean is not a price
        ("color is not red",), ("brand in sony, bose", "price > 20 and < 50"))

def test_range_labels():
    assert range_label(RangeFilter("price", lt=50.0)) == "price < 50"
    assert range_label(RangeFilter("price", lte=49.5)) == "price <= 49.5"
    assert range_label(RangeFilter("year", gte=1990.0)) == "year >= 1990"


HISTORY = [HistoryItem("1", "Star Wars", np.array([1.0, 0.0])),
           HistoryItem("2", "Alien", np.array([0.6, 0.8])),
           HistoryItem("3", "Fargo", np.array([0.0, 1.0])),
           HistoryItem("4", "No vector")]


def test_because_you_liked_closest_history_items():
    assert because_you_liked(np.array([2.0, 0.0]), HISTORY) == (Liked("1", "Star Wars", 1.0), Liked("2", "Alien", 0.6))
    assert because_you_liked(np.array([0.0, 1.0]), HISTORY, n=1) == (Liked("3", "Fargo", 1.0),)
    assert because_you_liked(np.array([1.0, 0.0]), HISTORY, min_similarity=0.7) == (Liked("1", "Star Wars", 1.0),)
    assert because_you_liked(None, HISTORY) == ()
    assert because_you_liked(np.zeros(2), HISTORY) == ()
    assert because_you_liked(np.array([1.0, 0.0]), HISTORY, exclude="1") == (Liked("2", "Alien", 0.6),)


def test_explain_whole_result():
    cand = Candidate("5", 0.03, bm25_score=2.0, dense_score=0.8, cf_score=1.5, ranks={"bm25": 1, "dense": 2},
                     contributions={"bm25": 0.02, "dense": 0.01},
                     source={"item_id": "5", "genres": ["sci-fi", "adventure"], "year": 1994})
    e = explain(cand, INTENT, item_vector=np.array([0.8, 0.6]), history=HISTORY)
    assert e.to_dict() == {
        "satisfied": ["genres = sci-fi", "genres = adventure", "year in [1990, 1999]", "genres is not horror"],
        "unsatisfied": [],
        "contributions": {"bm25": 0.02, "dense": 0.01},
        "because_you_liked": [{"item_id": "2", "title": "Alien", "similarity": 0.96},
                              {"item_id": "1", "title": "Star Wars", "similarity": 0.8}]}
    assert signal_contributions(cand) == {"bm25": 0.6667, "dense": 0.3333}
    assert signal_contributions(Candidate("x", 0.0)) == {}
