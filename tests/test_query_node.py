"""The query builder's bodies run on the real node: filters honoured, both paths same shape."""

from __future__ import annotations

import pytest

from osreco.ingest.index_spec import IndexSpec
from osreco.plugin.explain import check_filters
from osreco.plugin.fusion import FusionSettings, candidates_from_hybrid, fuse, read_msearch
from osreco.plugin.intent.parser import parse_intent
from osreco.plugin.intent.vocab import vocabulary_from_response, vocabulary_request
from osreco.plugin.query import QueryOptions, build_hybrid_search, build_msearch, build_recommend, build_similar

pytestmark = pytest.mark.integration

ITEMS = [  # id, title, brand, color, category, price, year, popularity, embedding, cf_vector
    ("1", "Red runner light", "nike", "red", "running shoes", 45.0, 2020, 5.0, [1, 0, 0], [1, 0]),
    ("2", "Red racer", "asics", "red", "running shoes", 39.0, 2021, 3.0, [0.9, 0.1, 0], [0.5, 0.5]),
    ("3", "Blue trail runner", "asics", "blue", "running shoes", 60.0, 2019, 4.0, [0.8, 0.2, 0], [0, 1]),
    ("4", "Quiet cans 降噪耳机", "sony", "red", "headphones", 99.0, 2022, 9.0, [0, 1, 0], [1, 1]),
    ("5", "轻便跑鞋 Red light racer", "li-ning", "red", "running shoes", 29.0, 2023, 1.0, [0.95, 0, 0.1], [0.2, 0.1]),
    ("6", "Budget red trainer", "puma", "red", "running shoes", 19.0, 2018, 2.0, [0.7, 0, 0.3], [0.9, 0.1]),
]


@pytest.fixture
def shop(os_client, index_name):
    spec = IndexSpec(alias=index_name, dim=3, artifact_id="test-artifact", cf_dim=2)
    index = f"{index_name}-v1"
    os_client.indices.create(index=index, body=spec.index_body())
    keys = ["item_id", "title", "brand", "color", "category", "price", "year", "popularity", "embedding", "cf_vector"]
    for row in ITEMS:
        os_client.index(index=index, id=row[0], body={**dict(zip(keys, row)), "text": row[1]})
    os_client.indices.refresh(index=index)
    vocab = vocabulary_from_response(os_client.search(index=index, body=vocabulary_request()))
    return os_client, index, vocab


def test_vocabulary_from_the_index(shop):
    _, _, vocab = shop
    assert vocab.values["brand"] == ("asics", "li-ning", "nike", "puma", "sony")
    assert vocab.values["category"] == ("headphones", "running shoes")


def test_msearch_every_signal_honours_the_filters(shop):
    client, index, vocab = shop
    intent = parse_intent("light red running shoes under $50, not Nike", vocab)
    plan = build_msearch(intent, QueryOptions(index, size=10, ef_search=20), [1.0, 0.0, 0.0], [1.0, 0.0])
    results = read_msearch(plan.signals, client.msearch(body=plan.lines)["responses"])
    assert plan.signals == ("bm25", "dense", "cf")
    for r in results.values():
        assert r.error is None and not r.timed_out and r.hits
        for h in r.hits:
            assert check_filters(intent, h["_source"])[1] == (), (r.signal, h["_source"])
    assert {h["_id"] for h in results["dense"].hits} == {"2", "5", "6"}  # efficient filtering keeps k results
    fused = fuse(results, FusionSettings())
    assert fused[0].item_id in {"5", "2"} and {c.item_id for c in fused} == {"2", "5", "6"}


def test_chinese_text_matches_the_cjk_subfield(shop):
    client, index, vocab = shop
    intent = parse_intent("轻便", vocab)
    plan = build_msearch(intent, QueryOptions(index, size=5, ef_search=10))
    hits = client.msearch(body=plan.lines)["responses"][0]["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["5"]


def test_sorted_listing_without_text(shop):
    client, index, vocab = shop
    intent = parse_intent("cheapest red running shoes", vocab)
    plan = build_msearch(intent, QueryOptions(index, size=10, ef_search=20))
    hits = client.msearch(body=plan.lines)["responses"][0]["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["6", "5", "2", "1"]


def test_text_less_listing_is_served_from_the_request_cache(shop):
    client, index, vocab = shop
    plan = build_msearch(parse_intent("cheapest red running shoes", vocab), QueryOptions(index, size=10, ef_search=20))

    def cache() -> dict:
        return client.indices.stats(index=index, metric="request_cache")["_all"]["total"]["request_cache"]

    before = cache()
    first = client.msearch(body=plan.lines)["responses"][0]["hits"]["hits"]
    second = client.msearch(body=plan.lines)["responses"][0]["hits"]["hits"]
    after = cache()
    assert [h["_id"] for h in second] == [h["_id"] for h in first] == ["6", "5", "2", "1"]
    assert second[0]["_source"]["title"] == "Budget red trainer"  # the cached hits still carry their fields
    assert after["miss_count"] > before["miss_count"] and after["hit_count"] > before["hit_count"]


def test_native_hybrid_same_shape_and_filters(shop):
    client, index, vocab = shop
    intent = parse_intent("red racer, not nike", vocab)
    hybrid = build_hybrid_search(intent, QueryOptions(index, size=10, ef_search=20), [0.9, 0.1, 0.0], [1.0, 0.0])
    client.transport.perform_request("PUT", f"/_search/pipeline/{hybrid.pipeline_id}", body=hybrid.pipeline_body)
    try:
        resp = client.search(index=index, body=hybrid.body,
                             params={"search_pipeline": hybrid.pipeline_id, "explain": "true"})
    finally:
        client.transport.perform_request("DELETE", f"/_search/pipeline/{hybrid.pipeline_id}")
    weights = hybrid.pipeline_body["phase_results_processors"][0]["normalization-processor"][
        "combination"]["parameters"]["weights"]
    cands = candidates_from_hybrid(resp, hybrid.signals, weights, FusionSettings(cf_weight=0.0))
    assert cands and all(check_filters(intent, c.source)[1] == () for c in cands)
    assert "1" not in {c.item_id for c in cands}
    top = cands[0]
    assert top.item_id == "2" and top.bm25_score == 1.0
    # the node floors normalized scores at 0.001, so the shares match its score to ~1e-3
    assert sum(top.contributions.values()) == pytest.approx(top.score, abs=2e-3)


def test_similar_and_recommend_exclude_items(shop):
    client, index, _ = shop
    opts = QueryOptions(index, size=3, ef_search=10)
    hits = client.search(index=index, body=build_similar("1", [1.0, 0.0, 0.0], opts))["hits"]["hits"]
    assert "1" not in [h["_id"] for h in hits] and hits[0]["_id"] == "5"
    plan = build_recommend([1.0, 0.0], ["1", "4"], opts)
    res = read_msearch(plan.signals, client.msearch(body=plan.lines)["responses"])
    assert [h["_id"] for h in res["cf"].hits] == ["6", "2", "5"]
    assert [h["_id"] for h in res["popularity"].hits] == ["3", "2", "6"]
    recs = fuse(res, FusionSettings(cf_mode="additive"))
    assert {c.item_id for c in recs}.isdisjoint({"1", "4"})
