"""``/v1/recommend`` and similar items on the real node: the served blend (ALS + stored
co-engagement neighbours + popularity), seen items excluded inside retrieval, cold users,
the popularity degradation, and the similar-items blend."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import uuid
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from opensearchpy.helpers import bulk

from osreco.cf import events as ev_store
from osreco.cf import store as cf_store
from osreco.cf.interactions import Interaction
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.priors import event_delta, popularity_at, popularity_clock, rating_averages, top_neighbors
from osreco.cf.privacy import pseudonymize
from osreco.ingest.connection import OpenSearchConfig
from osreco.ingest.index_spec import IndexSpec
from osreco.plugin.app import create_app
from osreco.plugin.config import DEV_HMAC_KEY, SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.metrics import Metrics
from osreco.plugin.recommend import RecommendSettings, blend, neighbor_scores
from osreco.plugin.service import SearchService

N_SEEN = 3000
HEAVY, LIGHT, COLD = "heavy", "light", "cold"


def _key(user: str) -> str:
    return pseudonymize(user, DEV_HMAC_KEY)


def _items() -> list[dict]:
    """Seen items (a taste spread for the light user), 20 unseen ones, and items reachable only
    through neighbours or content."""
    docs = [{"_id": f"s{i}", "cf_vector": [1.0, 0.001 * i], "embedding": [1.0, 0.0], "popularity": 1.0,
             "genres": ["drama"]} for i in range(N_SEEN)]
    docs += [{"_id": f"u{j}", "cf_vector": [0.5 - 0.01 * j, 0.0], "embedding": [1.0, 0.05 * j],
              "popularity": 2.0 + j, "genres": ["comedy" if j % 2 else "drama"]} for j in range(20)]
    far = {"cf_vector": [-1.0, -1.0], "popularity": 0.0}
    docs += [
        {"_id": "h1", "cf_vector": [0.0, 0.0], "embedding": [1.0, 0.0], "popularity": 0.0,
         "cf_neighbors": ["nb_only"], "cf_neighbor_scores": [5.0]},
        {"_id": "nb_only", "embedding": [-1.0, 0.0], **far},
        {"_id": "c1", "embedding": [0.0, 1.0], "cf_vector": [0.0, 0.0], "popularity": 0.0,
         "cf_neighbors": ["cold_nb"], "cf_neighbor_scores": [3.0]},
        {"_id": "cold_nb", "embedding": [-1.0, 0.0], **far},
        {"_id": "content_match", "embedding": [0.05, 1.0], **far},
        # similar items: x's content twin and its co-engagement neighbour (far in content)
        {"_id": "x", "embedding": [0.0, -1.0], "cf_neighbors": ["co_nb"], "cf_neighbor_scores": [0.9], **far},
        {"_id": "twin", "embedding": [0.02, -1.0], **far},
        {"_id": "co_nb", "embedding": [1.0, -0.2], **far},
    ]
    return docs


@pytest.fixture(scope="module")
def env(os_client, tmp_path_factory):
    alias = f"t-rec-{uuid.uuid4().hex[:8]}"
    spec = IndexSpec(alias=alias, dim=2, artifact_id="test-artifact", cf_dim=2)
    os_client.indices.create(index=spec.versioned_name(1), body=spec.index_body())
    os_client.indices.put_alias(index=spec.versioned_name(1), name=alias)
    docs = _items()
    bulk(os_client, ({"_index": alias, "_id": d["_id"], "_source": {**{k: v for k, v in d.items() if k != "_id"},
                                                                     "item_id": d["_id"], "title": d["_id"]}}
                     for d in docs), refresh=True)
    users = f"{alias}-users"
    # the heavy user through the real writer: `history` keeps the newest 500, `seen` all 3,000
    heavy = [f"s{i}" for i in range(N_SEEN)]
    cf_store.write_user_vectors(os_client, cf_store.StoreConfig(prefix=alias, item_index=alias), [_key(HEAVY)],
                                np.asarray([[1.0, 0.0]], np.float32), {_key(HEAVY): heavy})
    stored = os_client.get(index=users, id=_key(HEAVY))["_source"]
    assert len(stored["history"]) == 500 and len(stored["seen"]) == N_SEEN
    os_client.index(index=users, id=_key(LIGHT), body={"user_key": _key(LIGHT), "cf_vector": [0.0, 1.0],
                                                       "history": ["h1"]}, refresh=True)  # written before `seen`
    ev_store.write_events(os_client, alias, [ev_store.Event(_key(COLD), "c1", "click", "2024-01-01T00:00:00Z")],
                          refresh=True)
    ids = [d["_id"] for d in docs]
    factors = np.asarray([d.get("cf_vector", [0.0, 0.0]) for d in docs], np.float32)
    model = CFModel(np.asarray(ids), factors, np.asarray([_key(HEAVY)]), np.asarray([[1.0, 0.0]], np.float32),
                    np.zeros(len(ids)), np.ones(len(ids)), CFConfig(factors=2))
    model_dir = tmp_path_factory.mktemp("cf") / "model"
    model.save(model_dir)
    yield SimpleNamespace(alias=alias, cf_dir=str(model_dir))
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


def _app(env, url: str, cf_model: bool = False, **settings):
    config = SidecarConfig(opensearch=OpenSearchConfig(url=url), alias=env.alias, dev_mode=True,
                           cf_model_dir=env.cf_dir if cf_model else None, bundle_reload_s=0,
                           embed_vocabulary=False, recommend=replace(RecommendSettings(), **settings))
    return create_app(config).test_client()


@pytest.mark.parametrize("exact", [True, False], ids=["exact-numpy", "filtered-knn"])
def test_thousands_of_seen_items_still_give_k_unseen_results(env, opensearch_url, exact):
    client = _app(env, opensearch_url, cf_model=exact, exact_max_cells=10**9 if exact else 0, popularity_weight=0.0)
    body = client.get(f"/v1/recommend?user_id={HEAVY}&k=10").get_json()
    ids = [r["item_id"] for r in body["results"]]
    assert len(ids) == 10 and not any(i.startswith("s") for i in ids), ids
    # taste alone (no popularity prior) orders the unseen items by user . factor
    assert ids == [f"u{j}" for j in range(10)] and body["personalized"]


def test_served_blend_reaches_items_only_neighbours_know(env, opensearch_url):
    body = _app(env, opensearch_url).get(f"/v1/recommend?user_id={LIGHT}&k=10").get_json()
    by_id = {r["item_id"]: r for r in body["results"]}
    assert "nb_only" in by_id and "h1" not in by_id
    assert by_id["nb_only"]["contributions"]["neighbors"] > 0
    assert by_id["nb_only"]["because_you_liked"][0]["item_id"] == "h1"
    assert body["degradations"] == []


def test_cold_user_gets_content_and_neighbours_of_their_events(env, opensearch_url):
    body = _app(env, opensearch_url).get(f"/v1/recommend?user_id={COLD}&k=10").get_json()
    ids = [r["item_id"] for r in body["results"]]
    assert body["personalized"] and "c1" not in ids
    assert {"cold_nb", "content_match"} <= set(ids), ids
    # popularity counts for a cold user (cold_popularity_weight), not only as a tie-break
    assert all("popularity" in r["contributions"] for r in body["results"] if r["item_id"] != "content_match")
    assert any(r["contributions"].get("popularity", 0) > 0 for r in body["results"])


def test_unknown_user_recommend_is_ordered_by_popularity(env, opensearch_url):
    body = _app(env, opensearch_url).get("/v1/recommend?user_id=nobody-new&k=5").get_json()
    assert [r["item_id"] for r in body["results"]] == ["u19", "u18", "u17", "u16", "u15"]
    assert body["degradations"] == [] and not body["personalized"]


def test_missing_popularity_is_a_degradation(os_client, index_name, opensearch_url):
    spec = IndexSpec(alias=index_name, dim=2, artifact_id="test-artifact", cf_dim=2)
    os_client.indices.create(index=spec.versioned_name(1), body=spec.index_body())
    os_client.indices.put_alias(index=spec.versioned_name(1), name=index_name)
    bulk(os_client, ({"_index": index_name, "_id": i, "_source": {"item_id": i, "title": i}} for i in "abc"),
         refresh=True)
    app = _app(SimpleNamespace(alias=index_name, cf_dir=None), opensearch_url)
    body = app.get("/v1/recommend?user_id=nobody-new&k=3").get_json()
    assert len(body["results"]) == 3
    assert [d["kind"] for d in body["degradations"]] == ["popularity"]
    assert "osreco cf train" in body["degradations"][0]["message"]


@pytest.mark.parametrize("weight, first", [(0.7, "co_nb"), (0.0, "twin")])
def test_similar_blends_co_engagement_with_content(env, opensearch_url, weight, first):
    body = _app(env, opensearch_url, similar_cf_weight=weight).get("/v1/items/x/similar?k=5").get_json()
    ids = [r["item_id"] for r in body["results"]]
    assert ids[0] == first and "x" not in ids and len(ids) == 5


def test_similar_items_honour_filter_clauses(env, opensearch_url):
    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=env.alias, dev_mode=True,
                           bundle_reload_s=0, embed_vocabulary=False)
    service = SearchService.from_config(config, Metrics())
    ranked = service.similar_items.rank("u0", 5, ([{"term": {"genres": "comedy"}}], []), Degradations(Metrics()))
    assert len(ranked) == 5 and all("comedy" in c.source["genres"] for c in ranked)


# ---- the pure parts -----------------------------------------------------------------------

def test_neighbor_scores_sum_recent_history_with_decay():
    scores, because = neighbor_scores([("a", ["x", "y"], [1.0, 0.5]), ("b", ["x", "seen"], [2.0, 9.0])],
                                      decay=0.5, exclude={"seen"})
    assert scores == {"x": 1.0 + 0.5 * 2.0, "y": 0.5} and because == {"x": ("a", 1.0), "y": ("a", 0.5)}


def test_blend_scales_each_signal_and_weights_it():
    parts = blend({"als": {"a": 3.0, "b": 1.0}, "neighbors": {"b": 2.0}}, {"als": 1.0, "neighbors": 0.5},
                  ["a", "b", "c"])
    assert parts == {"a": {"als": 1.0}, "b": {"als": 0.0, "neighbors": 0.5}, "c": {}}


def test_popularity_is_stored_relative_to_a_reference_and_bumps_stay_consistent():
    day = 86400.0
    events = [Interaction("u", "old", 1.0, 0.0), Interaction("u", "new", 1.0, 30 * day)]
    pop, ref = popularity_at(events, ["old", "new", "none"], half_life_days=30.0)
    assert ref == 30 * day and pop.tolist() == [0.5, 1.0, 0.0]
    # an event 30 days after ref counts twice a training-time event: the ranking stays that of decay at "now"
    assert event_delta(60 * day, ref, 30.0) == pytest.approx(2.0)


def test_rating_average_is_shrunk_toward_the_global_mean_and_absent_for_implicit_data():
    events = [Interaction("u1", "a", 5.0, 0), Interaction("u2", "a", 5.0, 0), Interaction("u1", "b", 1.0, 0)]
    avg = rating_averages(events, ["a", "b", "c"], prior_count=1.0)
    mean = 11.0 / 3.0
    np.testing.assert_allclose(avg, [(10 + mean) / 3, (1 + mean) / 2, mean])
    assert rating_averages([Interaction("u", "a", 1.0, 0)], ["a"]) is None


def test_top_neighbors_keep_positive_weights_best_first():
    weights = np.asarray([[0.0, 0.2, -1.0, 0.7], [0.1, 0.0, 0.0, 0.0], [0, 0, 0, 0], [0.3, 0.3, 0.0, 0.0]])
    out = top_neighbors(weights, ["a", "b", "c", "d"], 2)
    assert out == [(["d", "b"], [0.7, 0.2]), (["a"], [0.1]), ([], []), (["a", "b"], [0.3, 0.3])]


def test_popularity_clock_reads_the_training_metadata():
    assert popularity_clock({"popularity_ref": 100.0, "popularity_half_life_days": 7.0}) == (100.0, 7.0)
    assert popularity_clock({"model": "als"}) is None and popularity_clock(None) is None


def test_event_delta_stays_finite_long_after_the_reference_time():
    from osreco.cf.priors import MAX_HALF_LIVES, event_delta

    decades = event_delta(30 * 365 * 86400.0, 0.0, 30.0)  # an old dataset's reference, a live event today
    assert np.isfinite(np.float32(decades)) and decades == 2.0 ** MAX_HALF_LIVES
    assert event_delta(30 * 86400.0, 0.0, 30.0) == pytest.approx(2.0)
