"""The sidecar end to end against the real node: the e-commerce fixture and MovieLens-100k.

Indexes are built once per module with the tiny bundle (fast; the filters, BM25 and the
collaborative signal carry these tests, not the meaning vector) and deleted afterwards.
The e-commerce index is conftest.py's ``shop`` fixture, shared with the other sidecar tests.
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from osreco.cf import store as cf_store
from osreco.cf.interactions import read_interactions
from osreco.cf.model import CFConfig
from osreco.cf.train import train_models
from osreco.exporter.encoder import Encoder
from osreco.ingest.connection import OpenSearchConfig
from osreco.ingest.fixtures import ECOMMERCE_QUERIES
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.movielens import movielens_ratings_path, read_movielens_items
from osreco.ingest.rebuild import ensure_index
from osreco.ingest.writer import WriteConfig, index_items
from osreco.plugin.app import create_app
from osreco.plugin.config import SidecarConfig

pytestmark = pytest.mark.integration
SHOP_FACETS = ("brand", "color", "category", "currency")
CF_DIM = 16


def _drop(client, alias: str) -> None:
    client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                          expand_wildcards="all")


@pytest.fixture(scope="module")
def movies(os_client, tiny_bundle, tmp_path_factory):
    """MovieLens-100k items, a CF model trained on its ratings, item factors in the index."""
    alias = f"t-sc-ml-{uuid.uuid4().hex[:8]}"
    enc = Encoder(tiny_bundle, threads=1)
    spec = IndexSpec.from_encoder(enc, alias, cf_dim=CF_DIM)
    items = [e for e in read_movielens_items() if not isinstance(e, Exception)]
    index_items(os_client, enc, ensure_index(os_client, spec), items, WriteConfig())
    data = read_interactions(movielens_ratings_path())
    model = train_models(list(data.interactions), CFConfig(factors=CF_DIM, iterations=8, threads=1))
    store = cf_store.StoreConfig(prefix=f"{alias}-s", item_index=alias)
    cf_store.write_item_factors(os_client, store, model.item_ids, model.item_factors)
    os_client.indices.refresh(index=alias)
    model_dir = tmp_path_factory.mktemp("cf") / "model"
    model.save(model_dir)
    genres = {e.item_id: set(e.fields.get("genres") or ()) for e in items}
    yield SimpleNamespace(alias=alias, bundle=str(tiny_bundle), prefix=store.prefix, cf_dir=str(model_dir),
                          genres=genres)
    _drop(os_client, alias)


def make_app(env, url: str, facets=("brand", "color", "category", "genres"), **overrides):
    """The real app on ``env``'s index; the tiny bundle's random vectors would link query words
    to arbitrary facet values, so embedding matching of the vocabulary is off here. The bundle
    hot-reload thread is off unless asked for (tests/test_hot_reload.py covers it), so the
    many apps built here leave no pollers behind."""
    overrides.setdefault("bundle_reload_s", 0)
    config = SidecarConfig(opensearch=OpenSearchConfig(url=url), alias=env.alias, bundle_dir=env.bundle,
                           store_prefix=env.prefix, cf_model_dir=getattr(env, "cf_dir", None),
                           dev_mode=True, facets=facets, embed_vocabulary=False, **overrides)
    return create_app(config)


def satisfies(source: dict, intent: dict) -> bool:
    """Whether an item's stored fields meet the intent's filters, ranges and exclusions."""
    def values(field):
        v = source.get(field)
        return set(v) if isinstance(v, list) else {v}

    for field, wanted in intent.get("filters", {}).items():
        if not values(field) & set(wanted):
            return False
    for field, banned in intent.get("exclude", {}).items():
        if values(field) & set(banned):
            return False
    for field, bounds in intent.get("ranges", {}).items():
        x = source.get(field)
        if x is None:
            return False
        if any(not ok for ok in (x >= bounds.get("gte", -np.inf), x > bounds.get("gt", -np.inf),
                                 x <= bounds.get("lte", np.inf), x < bounds.get("lt", np.inf))):
            return False
    return True


# ---- e-commerce ----------------------------------------------------------------------

@pytest.mark.parametrize("case", ECOMMERCE_QUERIES, ids=lambda c: c.query)
def test_sample_queries_top_hits_satisfy_filters(shop, opensearch_url, case):
    client = make_app(shop, opensearch_url, facets=SHOP_FACETS).test_client()
    body = client.post("/v1/search", json={"q": case.query, "k": 5}).get_json()
    intent = body["intent"]
    assert intent["filters"] or intent["ranges"], body
    assert body["results"], body
    for hit in body["results"]:
        assert satisfies(hit["source"], intent), (hit, intent)
        assert {"bm25_score", "dense_score", "cf_score", "score"} <= set(hit)
        assert isinstance(hit["filters_satisfied"], list)
    assert case.item_id in [h["item_id"] for h in body["results"][:3]], body["results"]
    assert body["parser"] == "rules" and body["timed_out"] is False and body["degradations"] == []


def test_explicit_filters_and_paging(shop, opensearch_url):
    client = make_app(shop, opensearch_url, facets=SHOP_FACETS).test_client()
    first = client.post("/v1/search", json={"q": "shoes", "k": 2, "filters": {"color": "red"}}).get_json()
    second = client.post("/v1/search", json={"q": "shoes", "k": 2, "page": 2,
                                              "filters": {"color": "red"}}).get_json()
    ids1, ids2 = [h["item_id"] for h in first["results"]], [h["item_id"] for h in second["results"]]
    assert len(ids1) == 2 and ids2 and not set(ids1) & set(ids2)
    assert all(satisfies(h["source"], {"filters": {"color": ["red"]}}) for h in first["results"] + second["results"])
    assert all("color = red" in h["filters_satisfied"] for h in first["results"])
    bad = client.post("/v1/search", json={"q": "shoes", "filters": {"flavour": "x"}})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "filters.flavour"


def test_readyz_ok_and_refuses_mismatched_bundle(shop, opensearch_url, os_client):
    ready = make_app(shop, opensearch_url).test_client().get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    enc = Encoder(shop.bundle, threads=1)
    other = IndexSpec(alias=f"{shop.alias}-other", dim=enc.dim, artifact_id="sha256:another-model")
    ensure_index(os_client, other)  # an index built with another bundle
    env = SimpleNamespace(alias=other.alias, bundle=shop.bundle, prefix=shop.prefix)
    resp = make_app(env, opensearch_url).test_client().get("/readyz")
    assert resp.status_code == 503
    assert "artifact_id" in resp.get_json()["error"]["message"]
    missing = SimpleNamespace(alias=f"{shop.alias}-nothere", bundle=shop.bundle, prefix=shop.prefix)
    resp = make_app(missing, opensearch_url).test_client().get("/readyz")
    assert resp.status_code == 503 and "does not exist" in resp.get_json()["error"]["message"]


def test_encoder_failure_degrades_to_bm25(shop, opensearch_url):
    app = make_app(shop, opensearch_url, facets=SHOP_FACETS)
    service = app.extensions["osreco.services"]

    def broken(texts):
        raise RuntimeError("onnxruntime session lost")

    service.encoder.encode_queries = broken  # the encoder, not OpenSearch, is what fails here
    body = app.test_client().post("/v1/search", json={"q": "waterproof hiking jacket"}).get_json()
    assert [d["kind"] for d in body["degradations"]] == ["encoder"]
    assert body["results"] and all(h["dense_score"] is None for h in body["results"])
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'osreco_degradations_total{kind="encoder"} 1.0' in metrics


def test_missing_bundle_file_serves_bm25_and_is_not_ready(shop, opensearch_url, tmp_path):
    broken = tmp_path / "bundle"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    env = SimpleNamespace(alias=shop.alias, bundle=str(broken), prefix=shop.prefix)
    client = make_app(env, opensearch_url, facets=SHOP_FACETS).test_client()
    body = client.post("/v1/search", json={"q": "waterproof hiking"}).get_json()
    assert body["results"] and body["degradations"][0]["kind"] == "encoder"
    assert client.get("/readyz").status_code == 503


# ---- MovieLens: personalization, events, forgetting -------------------------------------

SCIFI = "sci-fi"


def _scifi_share(results, genres) -> float:
    top = [h["item_id"] for h in results[:10]]
    return sum(SCIFI in genres.get(i, ()) for i in top) / max(len(top), 1)


def _rate(client, user: str, items: list[str], value: float = 5.0) -> dict:
    events = [{"user_id": user, "item_id": i, "kind": "rating", "value": value} for i in items]
    resp = client.post("/v1/events", json={"events": events})
    assert resp.status_code == 202, resp.get_json()
    # The fold-in runs off the request thread: wait for it before the next request reads the user.
    assert client.application.extensions["osreco.services"].users.foldin.drain(60)
    return resp.get_json()


def test_scifi_fan_gets_scifi_ranked_higher(movies, opensearch_url):
    client = make_app(movies, opensearch_url).test_client()
    scifi = sorted((i for i, g in movies.genres.items() if SCIFI in g), key=int)[:20]
    other = sorted((i for i, g in movies.genres.items() if g & {"romance", "musical"} and SCIFI not in g),
                   key=int)[:20]
    fan, other_user = f"fan-{uuid.uuid4().hex[:6]}", f"oth-{uuid.uuid4().hex[:6]}"
    assert _rate(client, fan, scifi)["queued_users"] == 1
    _rate(client, other_user, other)
    query = {"q": "adventure", "k": 10}
    fan_hits = client.post("/v1/search", json={**query, "user_id": fan}).get_json()
    other_hits = client.post("/v1/search", json={**query, "user_id": other_user}).get_json()
    assert fan_hits["personalized"] and other_hits["personalized"]
    assert _scifi_share(fan_hits["results"], movies.genres) > _scifi_share(other_hits["results"], movies.genres)
    assert any(h["because_you_liked"] for h in fan_hits["results"])
    assert all(h["cf_score"] is not None for h in fan_hits["results"])


def test_events_change_the_next_response(movies, opensearch_url):
    client = make_app(movies, opensearch_url).test_client()
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["cf_model"] is True  # bundle and cf_dim both match
    user = f"new-{uuid.uuid4().hex[:6]}"
    before = client.get(f"/v1/recommend?user_id={user}&k=10").get_json()
    assert not before["personalized"]
    scifi = sorted((i for i, g in movies.genres.items() if SCIFI in g), key=int)[:10]
    _rate(client, user, scifi)
    after = client.get(f"/v1/recommend?user_id={user}&k=10").get_json()
    assert after["personalized"]
    ids_after = [h["item_id"] for h in after["results"]]
    assert ids_after != [h["item_id"] for h in before["results"]]
    assert not set(ids_after) & set(scifi), "seen items are excluded"


def test_similar_items(movies, opensearch_url):
    client = make_app(movies, opensearch_url).test_client()
    body = client.get("/v1/items/1/similar?k=5").get_json()
    ids = [h["item_id"] for h in body["results"]]
    assert len(ids) == 5 and "1" not in ids
    assert client.get("/v1/items/no-such-item/similar").status_code == 404


def test_user_store_failure_is_not_personalized(movies, opensearch_url, os_client):
    client = make_app(movies, opensearch_url).test_client()
    user = f"u-{uuid.uuid4().hex[:6]}"
    _rate(client, user, ["50", "172", "181"])
    users_index = f"{movies.prefix}-users"
    os_client.indices.close(index=users_index)  # the real store refuses reads while closed
    try:
        body = client.post("/v1/search", json={"q": "star", "user_id": user}).get_json()
    finally:
        os_client.indices.open(index=users_index, wait_for_active_shards=1)
    assert body["results"] and not body["personalized"]
    assert [d["kind"] for d in body["degradations"]] == ["user_store"]


def test_forget_deletes_events_and_vector(movies, opensearch_url, os_client):
    client = make_app(movies, opensearch_url).test_client()
    user = f"f-{uuid.uuid4().hex[:6]}"
    _rate(client, user, ["1", "2", "3"])
    resp = client.delete(f"/v1/users/{user}").get_json()
    assert resp["events_deleted"] == 3 and resp["user_deleted"] is True
    assert not client.get(f"/v1/recommend?user_id={user}").get_json()["personalized"]
    assert os_client.count(index=movies.alias)["count"] == 1681, "the item index is untouched"


def test_native_hybrid_path_same_shape(shop, opensearch_url):
    msearch = make_app(shop, opensearch_url, facets=SHOP_FACETS).test_client()
    hybrid = make_app(shop, opensearch_url, facets=SHOP_FACETS, retrieval="hybrid").test_client()
    native = 0
    for case in ECOMMERCE_QUERIES:
        a = msearch.post("/v1/search", json={"q": case.query, "k": 5}).get_json()
        b = hybrid.post("/v1/search", json={"q": case.query, "k": 5}).get_json()
        assert a["retrieval"] == "msearch"
        assert b["retrieval"] == ("hybrid" if b["intent"]["text"] else "msearch")  # no text, no vector
        assert set(a) == set(b) and b["degradations"] == [] and b["results"]
        assert all(set(h) == set(a["results"][0]) for h in b["results"])
        assert all(satisfies(h["source"], b["intent"]) for h in b["results"])
        assert case.item_id in [h["item_id"] for h in b["results"][:3]]
        native += b["retrieval"] == "hybrid"
    assert native >= 1
    body = hybrid.post("/v1/search", json={"q": "lightweight cushioned running shoe", "k": 5}).get_json()
    assert body["retrieval"] == "hybrid" and body["results"] and body["degradations"] == []
    assert any(h["bm25_score"] is not None for h in body["results"])


class _LLMStub:
    """A local OpenAI-compatible chat endpoint with a canned reply (the LLM, not OpenSearch)."""

    def __init__(self, content: str):
        import http.server
        import threading

        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass  # keep test output quiet

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"


def test_llm_parser_used_and_fallback_reported(shop, opensearch_url):
    good = _LLMStub(json.dumps({"text": "running shoes", "filters": {"color": ["red"]},
                                "ranges": {"price": {"lt": 50}}, "exclude": {"brand": ["nike"]}, "sort": None}))
    bad = _LLMStub("I think you want shoes!")
    try:
        q = {"q": "cheap red running shoes under $50, not Nike", "k": 3}
        body = make_app(shop, opensearch_url, facets=SHOP_FACETS, llm_url=good.url, llm_mode="llm").test_client() \
            .post("/v1/search", json=q).get_json()
        assert body["parser"] == "llm" and body["degradations"] == []
        assert body["results"][0]["item_id"] == "shoe-asics-jolt-red"
        body = make_app(shop, opensearch_url, facets=SHOP_FACETS, llm_url=bad.url, llm_mode="llm").test_client() \
            .post("/v1/search", json=q).get_json()
        assert body["parser"] == "rules" and [d["kind"] for d in body["degradations"]] == ["llm_parser"]
        assert body["results"][0]["item_id"] == "shoe-asics-jolt-red"
    finally:
        good.server.shutdown()
        bad.server.shutdown()


def test_shard_failures_are_reported_with_partial_results(shop, opensearch_url, os_client):
    """An alias over the good index and one whose ``embedding`` is not a vector: the node fails
    that index's shard for the kNN sub-search and the sidecar reports it next to the results."""
    broken, both = f"{shop.alias}-broken", f"{shop.alias}-both"
    os_client.indices.create(index=broken, body={"mappings": {"properties": {
        "title": {"type": "text"}, "embedding": {"type": "keyword"}, "color": {"type": "keyword"}}}})
    os_client.index(index=broken, id="x1", body={"title": "hiking jacket", "color": "blue"}, refresh=True)
    os_client.indices.update_aliases(body={"actions": [{"add": {"index": f"{shop.alias}-v1", "alias": both}},
                                                       {"add": {"index": broken, "alias": both}}]})
    env = SimpleNamespace(alias=both, bundle=shop.bundle, prefix=shop.prefix)
    body = make_app(env, opensearch_url, facets=SHOP_FACETS).test_client() \
        .post("/v1/search", json={"q": "waterproof hiking jacket"}).get_json()
    assert body["results"]
    assert "shard_failures" in [d["kind"] for d in body["degradations"]]
    assert body["shard_failures"] and body["shard_failures"][0]["signal"] == "dense"
