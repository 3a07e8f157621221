"""IndexSpec, pipeline bodies and the writer's pure helpers, checked by exact value."""

from __future__ import annotations

import random

import pytest

from osreco.ingest.bulk import backoff_delay, is_retryable_item
from osreco.ingest.errors import ConfigError, IndexError_
from osreco.ingest.index_spec import IndexSpec, hybrid_search_pipeline_body
from osreco.ingest.pipeline import pipeline_body
from osreco.ingest.writer import IngestReport, WriteConfig

SPEC = IndexSpec(alias="products", dim=4, artifact_id="sha256:ab", model="tiny", cf_dim=2,
                 facets=("brand",), numeric={"price": "float"}, dates=())


def test_mapping_is_the_contract():
    text = {"type": "text", "analyzer": "english", "fields": {"cjk": {"type": "text", "analyzer": "cjk"}}}
    hnsw = {"name": "hnsw", "engine": "lucene", "parameters": {"m": 16, "ef_construction": 128}}
    assert SPEC.mappings() == {
        "dynamic": False,
        "_meta": {"artifact_id": "sha256:ab", "dim": 4, "model": "tiny", "cf_dim": 2, "space_type": "cosinesimil",
                  "osreco_version": SPEC.meta()["osreco_version"]},
        "properties": {
            "item_id": {"type": "keyword"}, "title": text, "text": text,
            "image": {"type": "keyword", "index": False},
            "audio": {"type": "keyword", "index": False}, "transcript": text,
            "audio_hash": {"type": "keyword"}, "transcript_language": {"type": "keyword"},
            "embedding": {"type": "knn_vector", "dimension": 4, "method": dict(hnsw, space_type="cosinesimil")},
            "cf_vector": {"type": "knn_vector", "dimension": 2, "method": dict(hnsw, space_type="innerproduct")},
            "content_hash": {"type": "keyword"}, "indexed_at": {"type": "date"},
            "popularity": {"type": "float"}, "rating_avg": {"type": "float"}, "cf_neighbors": {"type": "keyword"},
            "cf_neighbor_scores": {"type": "float", "index": False},
            "brand": {"type": "keyword"}, "price": {"type": "float"}}}


def test_settings_for_loading_and_serving():
    spec = IndexSpec(alias="p", dim=4, artifact_id="a", replicas=1, refresh_interval="5s")
    assert spec.settings(loading=True) == {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0,
                                                     "refresh_interval": "-1"}}
    assert spec.serving_settings() == {"index": {"number_of_replicas": 1, "refresh_interval": "5s"}}


def test_defaults_faiss_l2_and_extra_fields():
    spec = IndexSpec(alias="m", dim=8, artifact_id="a", normalize=False, engine="faiss", m=32, ef_construction=256)
    props = spec.mappings()["properties"]
    assert props["embedding"]["method"] == {"name": "hnsw", "engine": "faiss", "space_type": "l2",
                                            "parameters": {"m": 32, "ef_construction": 256}}
    assert {k: props[k]["type"] for k in ("brand", "color", "category", "genres", "price", "year", "popularity",
                                          "release_date")} == {
        "brand": "keyword", "color": "keyword", "category": "keyword", "genres": "keyword", "price": "float",
        "year": "integer", "popularity": "float", "release_date": "date"}
    wider = spec.with_fields(("currency", "brand"), {"stock": "integer"}, ("updated",))
    assert wider.facets == ("brand", "color", "category", "genres", "currency")
    assert wider.numeric["stock"] == "integer" and wider.dates == ("release_date", "updated")


def test_versions_and_validation():
    assert SPEC.versioned_name(3) == "products-v3"
    assert (SPEC.version_of("products-v12"), SPEC.version_of("products-v"),
            SPEC.version_of("other-v1")) == (12, None, None)
    for bad in ({"alias": "Products"}, {"alias": "p-v2"}, {"dim": 0}, {"engine": "nmslib"}, {"m": 1},
                {"artifact_id": ""}):
        with pytest.raises(ConfigError):
            IndexSpec(**{"alias": "p", "dim": 4, "artifact_id": "a", **bad})


def test_check_meta_refuses_another_bundle():
    SPEC.check_meta(SPEC.meta(), "products-v1")
    with pytest.raises(IndexError_, match="artifact_id"):
        SPEC.check_meta(dict(SPEC.meta(), artifact_id="sha256:cd"), "products-v1")
    with pytest.raises(IndexError_, match="no osreco _meta"):
        SPEC.check_meta(None, "products-v1")


def test_ingest_pipeline_body():
    assert pipeline_body(("brand",)) == {
        "description": "osreco: normalize items (facets, defaults, timestamps)",
        "processors": [
            {"set": {"field": "item_id", "value": "{{_id}}", "override": False}},
            {"trim": {"field": "brand", "ignore_missing": True}},
            {"lowercase": {"field": "brand", "ignore_missing": True}},
            {"set": {"field": "popularity", "value": 0, "override": False}},
            {"set": {"field": "indexed_at", "value": "{{{_ingest.timestamp}}}"}}]}
    with_model = pipeline_body((), model_id="m1", defaults={})["processors"][-3:]
    assert with_model == [
        {"set": {"field": "_osreco_embed_text", "value": "{{title}}. {{text}}", "if": "ctx.embedding == null"}},
        {"text_embedding": {"model_id": "m1", "field_map": {"_osreco_embed_text": "embedding"},
                            "if": "ctx.embedding == null"}},
        {"remove": {"field": "_osreco_embed_text", "ignore_missing": True}}]
    with pytest.raises(ConfigError):
        pipeline_body(model_id=" ")


def test_hybrid_search_pipeline_body():
    body = hybrid_search_pipeline_body((0.4, 0.6))
    assert body["phase_results_processors"][0]["normalization-processor"]["combination"] == {
        "technique": "arithmetic_mean", "parameters": {"weights": [0.4, 0.6]}}


def test_retry_classification_and_backoff():
    breaker = {"type": "circuit_breaking_exception", "reason": "[knn] Native memory circuit breaker"}
    mapping = {"type": "mapper_parsing_exception", "reason": "failed to parse field [year]"}
    assert [is_retryable_item(s, e) for s, e in [(429, None), (503, None), (400, breaker), (400, mapping),
                                                 (409, None), (500, None)]] == [True, True, True, False, False, False]
    config = WriteConfig(backoff_base_s=1.0, backoff_max_s=8.0)
    delays = [backoff_delay(a, config, random.Random(7)) for a in range(6)]
    caps = [1, 2, 4, 8, 8, 8]
    assert all(cap / 2 <= d < cap for d, cap in zip(delays, caps))
    with pytest.raises(ConfigError):
        WriteConfig(batch_size=0)


def test_report_counts():
    report = IngestReport(index="p-v1", rows_read=10, indexed=6, unchanged=2, deleted=1, dead_lettered=1,
                          elapsed_s=2.0)
    data = report.to_dict()
    assert (data["ok"], data["items_per_s"]) == (False, 5.0)
    assert data["indexed"] + data["unchanged"] + data["deleted"] + data["dead_lettered"] == data["rows_read"]
