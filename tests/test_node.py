"""The node is real: k-NN with a filter and BM25 answer exactly as designed."""

from __future__ import annotations

import numpy as np
import pytest
from opensearchpy import helpers

pytestmark = pytest.mark.integration

DIM = 384


def _unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def test_knn_with_filter_and_bm25_top_hit(os_client, index_name):
    os_client.indices.create(index=index_name, body={
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"properties": {
            "title": {"type": "text", "analyzer": "english"},
            "color": {"type": "keyword"},
            "embedding": {"type": "knn_vector", "dimension": DIM, "method": {
                "name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
                "parameters": {"m": 16, "ef_construction": 128}}}}}})
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(40, DIM))
    colors = ["red", "blue"]
    words = ["kettle", "lamp", "chair", "table", "rug", "mug", "clock", "vase"]
    docs = [{"_index": index_name, "_id": str(i),
             "title": f"{words[i % 8]} number {i}" + (" with zebra stripes" if i == 13 else ""),
             "color": colors[i % 2], "embedding": _unit(vectors[i])} for i in range(40)]
    ok, errors = helpers.bulk(os_client, docs, refresh=True)
    assert ok == 40 and not errors

    query = vectors[5] + 0.05 * rng.normal(size=DIM)
    cos = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    blue = [i for i in range(40) if colors[i % 2] == "blue"]
    expected = [str(i) for i in sorted(blue, key=lambda i: -cos[i])[:5]]
    resp = os_client.search(index=index_name, body={"size": 5, "query": {"knn": {"embedding": {
        "vector": _unit(query), "k": 5, "filter": {"term": {"color": "blue"}}}}}})
    got = [h["_id"] for h in resp["hits"]["hits"]]
    assert got == expected
    assert got[0] == "5"

    resp = os_client.search(index=index_name, body={"query": {"match": {"title": "zebra stripe"}}})
    assert resp["hits"]["hits"][0]["_id"] == "13"
    assert resp["hits"]["total"]["value"] == 1
