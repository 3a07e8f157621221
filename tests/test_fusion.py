"""Fusion: RRF, linear, the collaborative boost, sort re-rank, MMR and the hybrid reader (exact values)."""

from __future__ import annotations

import numpy as np
import pytest

from osreco.plugin.errors import ConfigError
from osreco.plugin.fusion import (
    Candidate,
    FusionSettings,
    apply_sort,
    candidates_from_hybrid,
    fuse,
    hybrid_signal_scores,
    mmr,
    read_msearch,
)
from osreco.plugin.intent.types import SortKey


def hit(item, score, **source):
    return {"_id": item, "_score": score, "_source": {"item_id": item, **source}}


BM25 = [hit("a", 3.0, price=30), hit("b", 2.0, price=10), hit("c", 1.0, price=20)]
DENSE = [hit("b", 0.9), hit("d", 0.8, price=1)]
CF = [hit("c", 2.0), hit("a", 1.0)]
NO_CF = FusionSettings(cf_weight=0.0)


def ids(cands):
    return [c.item_id for c in cands]


def test_rrf_exact_scores():
    out = fuse({"bm25": BM25, "dense": DENSE}, NO_CF)
    assert ids(out) == ["b", "a", "d", "c"]
    scores = {c.item_id: c.score for c in out}
    assert scores == pytest.approx({"a": 0.5 / 61, "b": 0.5 / 62 + 0.5 / 61, "c": 0.5 / 63, "d": 0.5 / 62})
    b = out[0]
    assert (b.bm25_score, b.dense_score, b.cf_score) == (2.0, 0.9, None)
    assert b.ranks == {"bm25": 2, "dense": 1} and b.signals == ("bm25", "dense")
    assert b.contributions == pytest.approx({"bm25": 0.5 / 62, "dense": 0.5 / 61})
    assert b.source == {"item_id": "b", "price": 10}  # first non-empty _source


def test_linear_min_max_and_ties():
    out = fuse({"bm25": BM25, "dense": DENSE}, FusionSettings(method="linear", cf_weight=0.0))
    assert [(c.item_id, c.score) for c in out] == [("b", 0.75), ("a", 0.5), ("d", 0.0), ("c", 0.0)]


def test_linear_weights_can_silence_a_signal():
    out = fuse({"bm25": BM25, "dense": DENSE}, FusionSettings(method="linear", bm25_weight=0.0, dense_weight=1.0,
                                                              cf_weight=0.0))
    assert [(c.item_id, c.score) for c in out] == [("b", 1.0), ("a", 0.0), ("d", 0.0), ("c", 0.0)]


def test_multiplicative_cf_boost_lifts_liked_items():
    out = fuse({"bm25": BM25, "dense": DENSE, "cf": CF}, FusionSettings(cf_weight=0.5))
    assert ids(out) == ["b", "c", "a", "d"]
    c = next(x for x in out if x.item_id == "c")
    assert c.score == pytest.approx(0.5 / 63 * 1.5)
    assert c.contributions == pytest.approx({"bm25": 0.5 / 63, "cf": 0.5 / 63 * 0.5})
    assert sum(c.contributions.values()) == pytest.approx(c.score)
    assert c.cf_score == 2.0


def test_cf_only_items_stay_last_in_multiplicative_mode():
    out = fuse({"bm25": BM25[:1], "cf": [hit("z", 5.0)]}, FusionSettings(cf_weight=0.5))
    assert ids(out) == ["a", "z"] and out[1].score == 0.0


def test_additive_for_recommendations():
    pop = [hit("p", None), hit("q", None)]
    out = fuse({"cf": [hit("q", 2.0), hit("r", 1.0)], "popularity": pop},
               FusionSettings(cf_mode="additive", cf_weight=1.0, popularity_weight=0.5))
    scores = {c.item_id: c.score for c in out}
    assert scores == pytest.approx({"q": 0.5 / 62 + 1 / 61, "r": 1 / 62, "p": 0.5 / 61})
    assert ids(out) == ["q", "r", "p"]
    only_cf = fuse({"cf": [hit("x", 3.0), hit("y", 1.0)]}, FusionSettings())
    assert ids(only_cf) == ["x", "y"] and only_cf[0].score == pytest.approx(0.3 / 61)


def test_explicit_affinity_overrides_cf_scores():
    out = fuse({"bm25": BM25}, FusionSettings(method="linear", bm25_weight=1.0, cf_weight=1.0),
               affinity={"a": 0.0, "c": 4.0})
    assert [(c.item_id, c.score) for c in out] == [("a", 1.0), ("b", 0.5), ("c", 0.0)]
    out = fuse({"bm25": BM25[1:]}, FusionSettings(method="linear", bm25_weight=1.0, cf_weight=1.0),
               affinity={"b": 0.0, "c": 4.0})
    assert [(c.item_id, c.score) for c in out] == [("b", 1.0), ("c", 0.0)]


def test_accepts_the_sidecar_fusion_config():
    from osreco.plugin.config import SidecarConfig

    config = SidecarConfig.from_env({"OPENSEARCH_URL": "http://localhost:9200", "OSRECO_DEV_MODE": "1",
                                     "OSRECO_CF_WEIGHT": "0"})
    out = fuse({"bm25": BM25, "dense": DENSE}, config.fusion)
    assert ids(out) == ["b", "a", "d", "c"]


def test_read_msearch_keeps_failures():
    responses = [{"hits": {"hits": BM25}, "timed_out": True, "_shards": {"failed": 1}},
                 {"error": {"type": "x", "reason": "knn broke"}, "status": 400}]
    res = read_msearch(("bm25", "dense"), responses)
    assert (len(res["bm25"].hits), res["bm25"].timed_out, res["bm25"].failed_shards) == (3, True, 1)
    assert res["dense"].hits == [] and res["dense"].error == "400 knn broke"
    assert ids(fuse(res, NO_CF)) == ["a", "b", "c"]
    with pytest.raises(ConfigError):
        read_msearch(("bm25",), [])


def test_apply_sort_only_reorders_lexical_matches():
    fused = fuse({"bm25": BM25, "dense": DENSE}, NO_CF)  # b, a, d, c
    assert ids(apply_sort(fused, SortKey("price", "asc"))) == ["b", "c", "a", "d"]
    assert ids(apply_sort(fused, SortKey("price", "desc"))) == ["a", "c", "b", "d"]
    assert ids(apply_sort(fused, None)) == ids(fused)
    dense_only = fuse({"dense": DENSE + [hit("e", 0.1)]}, NO_CF)  # no lexical match: sort all
    assert ids(apply_sort(dense_only, SortKey("price", "asc"))) == ["d", "b", "e"]  # e has no price


def test_newest_uses_release_date_when_year_is_missing():
    fused = fuse({"bm25": [hit("old", 3.0, year=1999), hit("new", 2.0, release_date="2025-03-01"),
                           hit("mid", 1.0, release_date="2024-12-31"), hit("none", 0.5)]}, NO_CF)
    assert ids(apply_sort(fused, SortKey("year", "desc"))) == ["new", "mid", "old", "none"]


def test_mmr_prefers_diverse_items():
    cands = [Candidate("a", 1.0), Candidate("b", 0.95), Candidate("c", 0.9)]
    vecs = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 1.0])}
    assert ids(mmr(cands, vecs, 0.5)) == ["a", "c", "b"]
    assert ids(mmr(cands, vecs, 1.0)) == ["a", "b", "c"]
    assert ids(mmr(cands, vecs, 0.5, k=1)) == ["a", "b", "c"]
    with pytest.raises(ConfigError):
        mmr(cands, vecs, 1.5)


def _explained(item, score, parts):
    """A hit shaped like neural-search's hybrid_score_explanation output (recorded from 3.6)."""
    inner = {"bm25": "max plus 0.3 times others of:", "knn": "within top 10 docs"}
    return {"_id": item, "_score": score, "_source": {"item_id": item},
            "_explanation": {"value": score, "description": "arithmetic_mean combination of:",
                             "details": [{"value": v, "description": "min_max normalization of:",
                                          "details": [{"value": 9.9, "description": inner[k]}]} for k, v in parts]}}


def test_hybrid_scores_are_recovered_per_signal():
    signals, w = ("bm25", "dense", "cf"), (0.4, 0.4, 0.2)
    assert hybrid_signal_scores(_explained("x", 0.6, [("knn", 1.0), ("knn", 1.0)]), signals, w) == \
        {"dense": 1.0, "cf": 1.0}
    assert hybrid_signal_scores(_explained("x", 0.3, [("bm25", 0.25), ("knn", 1.0)]), signals, w) == \
        {"bm25": 0.25, "cf": 1.0}
    assert hybrid_signal_scores(_explained("x", 0.5, [("bm25", 0.25), ("knn", 1.0)]), signals, w) == \
        {"bm25": 0.25, "dense": 1.0}


def test_candidates_from_hybrid_same_shape():
    resp = {"hits": {"hits": [_explained("x", 0.8, [("bm25", 1.0), ("knn", 1.0)]),
                              _explained("y", 0.4, [("knn", 1.0)])]}}
    out = candidates_from_hybrid(resp, ("bm25", "dense"), (0.4, 0.6), FusionSettings(cf_weight=0.0))
    assert [(c.item_id, c.score, c.bm25_score, c.dense_score, c.cf_score, c.ranks) for c in out] == [
        ("x", 0.8, 1.0, 1.0, None, {"bm25": 1, "dense": 1}), ("y", 0.4, None, 1.0, None, {"dense": 2})]
    assert out[0].contributions == pytest.approx({"bm25": 0.4, "dense": 0.6})


@pytest.mark.parametrize("kwargs", [dict(method="borda"), dict(cf_mode="max"), dict(bm25_weight=-1), dict(rrf_k=0)])
def test_options_are_validated(kwargs):
    with pytest.raises(ConfigError):
        FusionSettings(**kwargs)


# ---- taste per query class (osreco.plugin.taste) ---------------------------------------------

def test_query_class_listing_title_text():
    from osreco.plugin.taste import query_class

    hits = [hit("m1", 9.0, title="Usual Suspects, The (1995)"), hit("m2", 5.0, title="Suspects")]
    assert query_class("", hits) == "listing"
    assert query_class("  ", hits) == "listing"
    assert query_class("the usual suspects", hits) == "title"
    assert query_class("Usual Suspects", hits) == "text"  # a partial title is free text
    assert query_class("suspects", hits) == "title"  # the second lexical hit's title
    assert query_class("suspects", [hit(str(i), 1.0, title="x") for i in range(3)] + hits) == "text"


def test_taste_settings_pick_the_weight_of_each_class():
    from osreco.plugin.taste import class_weight, taste_settings

    cfg = FusionSettings(cf_weight=0.3, listing_cf_weight=0.7, title_cf_weight=0.05, demote_seen=True)
    listing, title, text = (taste_settings(cfg, c) for c in ("listing", "title", "text"))
    assert (listing.cf_weight, listing.cf_mode, listing.demote_seen) == (0.7, "additive", True)
    assert (title.cf_weight, title.cf_mode, title.demote_seen) == (0.05, "multiplicative", False)
    assert (text.cf_weight, text.cf_mode, text.demote_seen) == (0.3, "multiplicative", False)
    assert [class_weight(cfg, c) for c in ("listing", "title", "text")] == [0.7, 0.05, 0.3]
    with pytest.raises(ValueError, match="query class"):
        taste_settings(cfg, "browse")
    with pytest.raises(ConfigError, match="listing_cf_weight"):
        FusionSettings(listing_cf_weight=-1.0)


def test_listing_weight_decides_between_popularity_and_taste():
    from osreco.plugin.taste import taste_settings

    popular = [hit("pop1", None), hit("pop2", None), hit("liked", None)]  # a listing sorted by popularity
    taste = [hit("liked", 5.0), hit("pop2", 1.0)]
    affinity = {"pop1": 0.0, "pop2": 1.0, "liked": 5.0}
    none = taste_settings(FusionSettings(listing_cf_weight=0.0), "listing")
    strong = taste_settings(FusionSettings(listing_cf_weight=1.0), "listing")
    assert ids(fuse({"bm25": popular, "cf": taste}, none, affinity)) == ["pop1", "pop2", "liked"]
    assert ids(fuse({"bm25": popular, "cf": taste}, strong, affinity)) == ["liked", "pop2", "pop1"]


def test_seen_items_are_demoted_but_an_explicit_sort_cue_wins():
    from osreco.plugin.taste import demote, personal_order

    # taste (fused order) puts the seen, expensive item first; "cheapest" must still win
    fused = fuse({"bm25": [hit("seen", 3.0, price=5), hit("x", 2.0, price=30), hit("y", 1.0, price=20)]},
                 NO_CF)
    assert ids(demote(fused, ["seen"])) == ["x", "y", "seen"]
    assert ids(personal_order(fused, ["seen"], None)) == ["x", "y", "seen"]
    assert ids(personal_order(fused, ["seen"], SortKey("price", "asc"))) == ["seen", "y", "x"]
    assert ids(personal_order(fused, ["seen"], SortKey("price", "desc"))) == ["x", "y", "seen"]
    assert ids(personal_order(fused, [], None)) == ids(fused)
