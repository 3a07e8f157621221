"""Golden query bodies of the pure query builder (exact equality)."""

from __future__ import annotations

import pytest

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.parser import parse_intent
from osreco.plugin.intent.types import FacetMatch, Intent, IntentFields, RangeFilter, SortKey
from osreco.plugin.intent.vocab import Vocabulary
from osreco.plugin.query import (
    QueryOptions,
    build_hybrid_search,
    build_msearch,
    build_recommend,
    build_similar,
    filter_clauses,
)

OPTS = QueryOptions("items", size=10, ef_search=50, timeout="1s")
SRC = ["item_id", "title", "brand", "color", "category", "genres", "price", "year", "popularity", "release_date",
       "rating_avg"]
PRIORS = [{"popularity": {"order": "desc", "missing": "_last", "unmapped_type": "float"}},
          {"rating_avg": {"order": "desc", "missing": "_last", "unmapped_type": "float"}}]
FIELDS = ["title^2", "text", "title.cjk", "text.cjk", "transcript", "transcript.cjk"]
SHOP = Vocabulary.from_values({"brand": ["nike", "asics"], "color": ["red"], "category": ["running shoes"]})
SHOES = Intent(query="light red running shoes under $50, not Nike", text="light",
               filters=(FacetMatch("color", "red"), FacetMatch("category", "running shoes")),
               ranges=(RangeFilter("price", lt=50.0),), exclusions=(FacetMatch("brand", "nike"),))
FILTER = [{"terms": {"color": ["red"]}}, {"terms": {"category": ["running shoes"]}},
          {"range": {"price": {"lt": 50.0}}}]
MUST_NOT = [{"terms": {"brand": ["nike"]}}]
HEAD = {"size": 10, "timeout": "1s", "track_total_hits": False, "_source": SRC}


def test_parsed_intent_matches_the_hand_written_one():
    assert parse_intent(SHOES.query, SHOP).to_dict() == SHOES.to_dict()


def test_msearch_bm25_dense_cf():
    plan = build_msearch(SHOES, OPTS, query_vector=[0.6, 0.8], user_vector=[1, 0, 0.5])
    assert plan.signals == ("bm25", "dense", "cf")
    knn_filter = {"bool": {"filter": FILTER, "must_not": MUST_NOT}}
    assert plan.lines == [
        {"index": "items"},
        {**HEAD, "query": {"bool": {"filter": FILTER, "must_not": MUST_NOT, "must": [
            {"multi_match": {"query": "light", "fields": FIELDS, "type": "best_fields", "tie_breaker": 0.3}}]}}},
        {"index": "items"},
        {**HEAD, "query": {"knn": {"embedding": {"vector": [pytest.approx(0.6), pytest.approx(0.8)], "k": 10,
                                                 "method_parameters": {"ef_search": 50}, "filter": knn_filter}}}},
        {"index": "items"},
        {**HEAD, "query": {"knn": {"cf_vector": {"vector": [1.0, 0.0, 0.5], "k": 10,
                                                 "method_parameters": {"ef_search": 50}, "filter": knn_filter}}}},
    ]


def test_listing_taste_knn_stays_in_the_filters_and_leaves_out_seen_items():
    intent = Intent(query="red", text="", filters=(FacetMatch("color", "red"),),
                    exclusions=(FacetMatch("brand", "nike"),))
    plan = build_msearch(intent, OPTS, user_vector=[1.0, 0.0], taste_exclude=["s4", "h1", "s4"])
    assert plan.signals == ("bm25", "cf")
    assert plan.lines[3]["query"]["knn"]["cf_vector"]["filter"] == {"bool": {
        "filter": [{"terms": {"color": ["red"]}}],
        "must_not": [{"terms": {"brand": ["nike"]}}, {"ids": {"values": ["s4", "h1"]}}]}}
    # the listing itself still lists everything the filters allow (seen items are demoted later)
    assert plan.lines[1]["query"] == {"bool": {"filter": [{"terms": {"color": ["red"]}}],
                                               "must_not": [{"terms": {"brand": ["nike"]}}],
                                               "must": [{"match_all": {}}]}}
    assert build_msearch(intent, OPTS, user_vector=[1.0, 0.0]).lines[3]["query"]["knn"]["cf_vector"]["filter"] == {
        "bool": {"filter": [{"terms": {"color": ["red"]}}], "must_not": [{"terms": {"brand": ["nike"]}}]}}


def test_listing_neighbors_of_the_history_within_the_filters():
    intent = Intent(query="red", text="", filters=(FacetMatch("color", "red"),))
    plan = build_msearch(intent, OPTS, user_vector=[1.0], taste_exclude=["a", "b"], neighbors_of=["a", "b", "a"])
    assert plan.signals == ("bm25", "cf", "neighbors")
    assert plan.lines[5] == {**HEAD, "query": {"bool": {
        "filter": [{"terms": {"color": ["red"]}}], "must_not": [{"ids": {"values": ["a", "b"]}}],
        "should": [{"constant_score": {"filter": {"term": {"cf_neighbors": "a"}}}},
                   {"constant_score": {"filter": {"term": {"cf_neighbors": "b"}}}}],
        "minimum_should_match": 1}},
        "sort": [{"_score": "desc"}, {"popularity": {"order": "desc", "missing": "_last"}}, PRIORS[1],
                 {"item_id": "asc"}]}
    assert "neighbors" not in build_msearch(intent, OPTS, user_vector=[1.0]).signals


def test_msearch_without_vectors_is_bm25_only():
    plan = build_msearch(Intent(query="alien", text="alien"), OPTS)
    assert plan.signals == ("bm25",)
    assert plan.lines[1]["query"] == {"bool": {"must": [
        {"multi_match": {"query": "alien", "fields": FIELDS, "type": "best_fields", "tie_breaker": 0.3}}]}}


def test_no_text_is_a_sorted_listing_and_skips_meaning():
    intent = Intent(query="cheapest red", text="", filters=(FacetMatch("color", "red"),), sort=SortKey("price", "asc"))
    plan = build_msearch(intent, OPTS, query_vector=[1.0, 0.0], user_vector=[1.0])
    assert plan.signals == ("bm25", "cf")
    # the listing asks for the request cache (only size-0 searches are cached unless asked); the taste kNN does not
    assert plan.lines[0] == {"index": "items", "request_cache": True} and plan.lines[2] == {"index": "items"}
    assert plan.lines[1] == {**HEAD, "query": {"bool": {"filter": [{"terms": {"color": ["red"]}}],
                                                        "must": [{"match_all": {}}]}},
                             "sort": [{"price": {"order": "asc", "missing": "_last"}}, *PRIORS, {"item_id": "asc"}]}
    newest = build_msearch(Intent(query="newest", text="", sort=SortKey("year", "desc")), OPTS)
    assert newest.lines[1]["sort"] == [{"year": {"order": "desc", "missing": "_last"}},
                                       {"release_date": {"order": "desc", "missing": "_last"}}, *PRIORS,
                                       {"item_id": "asc"}]  # ties by popularity, then the quality prior
    unsorted = build_msearch(Intent(query="", text=""), OPTS)
    assert unsorted.lines[1]["sort"][0] == {"popularity": {"order": "desc", "missing": "_last"}}
    assert unsorted.lines[1]["query"] == {"bool": {"must": [{"match_all": {}}]}}


def test_all_of_fields_require_every_value_and_rating_sorts_by_the_quality_prior():
    intent = Intent(query="", text="", filters=(FacetMatch("genres", "romance"), FacetMatch("genres", "comedy"),
                                                FacetMatch("brand", "a"), FacetMatch("brand", "b")),
                    ranges=(RangeFilter("year", gte=1980.0, lte=1989.0),), sort=SortKey("rating", "desc"))
    assert filter_clauses(intent, OPTS) == ([{"term": {"genres": "romance"}}, {"term": {"genres": "comedy"}},
                                             {"terms": {"brand": ["a", "b"]}},
                                             {"range": {"year": {"gte": 1980.0, "lte": 1989.0}}}], [])
    plan = build_msearch(intent, OPTS)  # "best rated": the shrunk average rating, ties by popularity
    assert plan.lines[1]["sort"][:2] == [
        {"rating_avg": {"order": "desc", "missing": "_last", "unmapped_type": "float"}},
        {"popularity": {"order": "desc", "missing": "_last", "unmapped_type": "float"}}]
    rated = QueryOptions("items", fields=IntentFields(rating="avg_rating"))
    assert build_msearch(intent, rated).lines[1]["sort"][0] == {"avg_rating": {"order": "desc", "missing": "_last"}}


def test_user_text_only_in_multi_match():
    nasty = 'x" } }, "script": {"source": "boom"} {'
    plan = build_msearch(Intent(query=nasty, text=nasty), OPTS)
    body = plan.lines[1]
    assert body["query"]["bool"]["must"][0]["multi_match"]["query"] == nasty
    assert "script" not in body and "query_string" not in str(body)


def test_hybrid_search_and_pipeline():
    h = build_hybrid_search(SHOES, OPTS, [1.0, 0.0], [0.5], weights={"bm25": 1, "dense": 2, "cf": 1})
    assert h.signals == ("bm25", "dense", "cf")
    assert h.pipeline_id == "osreco-hybrid-bm2525-dense50-cf25"
    knn_filter = {"bool": {"filter": FILTER, "must_not": MUST_NOT}}
    assert h.body == {**HEAD, "query": {"hybrid": {"queries": [
        {"bool": {"filter": FILTER, "must_not": MUST_NOT, "must": [
            {"multi_match": {"query": "light", "fields": FIELDS, "type": "best_fields", "tie_breaker": 0.3}}]}},
        {"knn": {"embedding": {"vector": [1.0, 0.0], "k": 10, "method_parameters": {"ef_search": 50},
                               "filter": knn_filter}}},
        {"knn": {"cf_vector": {"vector": [0.5], "k": 10, "method_parameters": {"ef_search": 50},
                               "filter": knn_filter}}}]}}}
    assert h.pipeline_body == {
        "description": "osreco hybrid: min_max + arithmetic_mean over bm25, dense, cf",
        "phase_results_processors": [{"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.25, 0.5, 0.25]}}}}],
        "response_processors": [{"hybrid_score_explanation": {}}]}
    with pytest.raises(ConfigError):
        build_hybrid_search(SHOES, OPTS, weights={"bm25": 0.0})


def test_similar_excludes_the_item():
    body = build_similar("42", [0.0, 1.0], OPTS)
    assert body == {**HEAD, "query": {"knn": {"embedding": {
        "vector": [0.0, 1.0], "k": 11, "method_parameters": {"ef_search": 50},
        "filter": {"bool": {"must_not": [{"ids": {"values": ["42"]}}]}}}}}}


def test_recommend_taste_plus_popularity_without_seen():
    plan = build_recommend([1.0, 2.0], ["7", "9", "7"], OPTS)
    seen = [{"ids": {"values": ["7", "9"]}}]
    assert plan.signals == ("cf", "popularity")
    assert plan.lines == [
        {"index": "items"},
        {**HEAD, "query": {"knn": {"cf_vector": {"vector": [1.0, 2.0], "k": 10, "method_parameters": {"ef_search": 50},
                                                 "filter": {"bool": {"must_not": seen}}}}}},
        {"index": "items"},
        {**HEAD, "query": {"bool": {"must": [{"match_all": {}}], "must_not": seen}},
         "sort": [{"popularity": {"order": "desc", "missing": "_last"}}, {"item_id": "asc"}]},
    ]
    cold = build_recommend(None, [], OPTS)
    assert cold.signals == ("popularity",) and cold.lines[1]["query"] == {"bool": {"must": [{"match_all": {}}]}}


@pytest.mark.parametrize("kwargs", [dict(index=""), dict(index="a,b"), dict(index="i", size=0),
                                    dict(index="i", size=100, ef_search=50), dict(index="i", timeout="soon")])
def test_options_are_validated(kwargs):
    with pytest.raises(ConfigError):
        QueryOptions(**kwargs)
