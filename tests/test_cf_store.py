"""Collaborative factors in a real OpenSearch node: cf_vector, users index, metadata, the CLI."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from click.testing import CliRunner
from opensearchpy.helpers import bulk

from osreco.cf import store as cf_store
from osreco.cf.cli import cf
from osreco.cf.interactions import Interaction
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.privacy import pseudonymize
from osreco.cf.train import train_models
from osreco.ingest.errors import IndexError_
from osreco.ingest.index_spec import IndexSpec

pytestmark = pytest.mark.integration

KEY = "test-key-0123456789abcdef0123456789"
GROUP_A = [f"a{i}" for i in range(10)]
GROUP_B = [f"b{i}" for i in range(10)]


def make_item_index(client, alias: str, cf_dim: int = 4) -> None:
    """An item index from IndexSpec: 10 A items, 10 B items and b_new (no interactions)."""
    spec = IndexSpec(alias=alias, dim=2, artifact_id="test-artifact", cf_dim=cf_dim)
    client.indices.create(index=spec.versioned_name(1), body=spec.index_body())
    client.indices.put_alias(index=spec.versioned_name(1), name=alias)
    docs = [(it, [1.0, 0.0]) for it in GROUP_A] + [(it, [0.0, 1.0]) for it in GROUP_B + ["b_new"]]
    bulk(client, ({"_index": alias, "_id": it, "_source": {"item_id": it, "title": it, "embedding": emb}}
                  for it, emb in docs), refresh=True)


def checkerboard_csv(path) -> None:
    rows = ["user_id,item_id,value,timestamp"]
    for group, items in (("A", GROUP_A), ("B", GROUP_B)):
        for u in range(12):
            rows += [f"{group}{u},{it},1,{1000 + t}" for t, it in enumerate(items) if t not in (u % 10, (u + 3) % 10)]
    rows += ["A0,not-in-index,1,5", "A1,a5,many,6"]
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture
def trained(os_client, index_name, tmp_path, monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    make_item_index(os_client, index_name)
    checkerboard_csv(tmp_path / "clicks.csv")
    result = CliRunner().invoke(cf, ["train", str(tmp_path / "clicks.csv"), "--index", index_name, "--model-dir",
                                     str(tmp_path / "model"), "--iterations", "20", "--regularization", "0.1",
                                     "--ease-lambda", "5", "--json"])
    return result, tmp_path / "model"


def test_train_cli_stores_factors_users_and_metadata(os_client, index_name, trained):
    result, model_dir = trained
    assert result.exit_code == 1, result.output  # one rejected row: finished with failures
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["read"]["unknown_items"] == 1 and summary["read"]["rejected"][0]["line"] > 1
    assert summary["items"] == {"written": 21, "missing": 0, "missing_examples": [], "failed": 0,
                                "failed_examples": {}}
    assert summary["meta"]["items_from_content"] == 1
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    meta = cf_store.read_meta(os_client, store)
    assert meta["item_coverage"] == pytest.approx(20 / 21) and meta["params"]["factors"] == 4
    assert meta["data_window"] == {"from": 1000.0, "to": 1009.0}
    model = CFModel.load(model_dir)
    key = pseudonymize("A0", KEY)
    np.testing.assert_allclose(cf_store.read_user_vector(os_client, store, key), model.user_vector(key), rtol=1e-6)
    assert cf_store.read_user_vector(os_client, store, "A0") is None  # raw ids are never stored


def test_knn_on_cf_vector_returns_the_users_group(os_client, index_name, trained):
    _, model_dir = trained
    model = CFModel.load(model_dir)
    vec = model.user_vector(pseudonymize("B2", KEY))
    body = {"size": 5, "_source": False, "query": {"knn": {"cf_vector": {"vector": vec.tolist(), "k": 5}}}}
    hits = os_client.search(index=index_name, body=body)["hits"]["hits"]
    assert {h["_id"] for h in hits} <= set(GROUP_B + ["b_new"])
    assert len(hits) == 5


def test_online_refresh_folds_in_new_events(os_client, index_name, trained):
    from osreco.cf.events import Event, write_events

    _, model_dir = trained
    model = CFModel.load(model_dir)
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    key = pseudonymize("newcomer", KEY)
    write_events(os_client, index_name, [Event(key, it, "click", f"2024-01-0{d + 1}T00:00:00Z")
                                         for d, it in enumerate(["b1", "b2", "b3"])], refresh=True)
    vec = cf_store.refresh_user_vector(os_client, store, model, key)
    np.testing.assert_allclose(cf_store.read_user_vector(os_client, store, key), vec, rtol=1e-6)
    recs = [i for i, _ in model.recommend(vec, exclude=["b1", "b2", "b3"], k=3)]
    assert set(recs) <= set(GROUP_B + ["b_new"])
    assert cf_store.read_user(os_client, store, key)["history"] == ["b1", "b2", "b3"]


def test_online_refresh_of_a_trained_user_keeps_their_history(os_client, index_name, trained):
    from osreco.cf.events import Event, write_events

    _, model_dir = trained
    model = CFModel.load(model_dir)
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    key = pseudonymize("A4", KEY)  # trained on 8 A items
    write_events(os_client, index_name, [Event(key, "b1", "click", "2024-01-01T00:00:00Z")], refresh="wait_for")
    vec = cf_store.refresh_user_vector(os_client, store, model, key)
    history = cf_store.read_user(os_client, store, key)["history"]
    assert history[-1] == "b1" and len(history) == 9
    recs = [i for i, _ in model.recommend(vec, exclude=history, k=2)]
    assert set(recs) <= set(GROUP_A)  # one click on B does not erase a long A history


def test_factor_dim_mismatch_is_a_clear_error(os_client, index_name):
    make_item_index(os_client, index_name, cf_dim=8)
    model = train_models([Interaction("u", "a1", 1.0, 0.0), Interaction("v", "a2", 1.0, 0.0)],
                         CFConfig(factors=4, iterations=2, threads=1))
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    with pytest.raises(IndexError_, match="cf_vector dim 8, factors have 4"):
        cf_store.write_item_factors(os_client, store, model.item_ids.tolist(), model.item_factors)


def test_partial_update_counts_missing_items_and_keeps_other_fields(os_client, index_name):
    make_item_index(os_client, index_name)
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    factors = np.ones((2, 4), dtype=np.float32)
    report = cf_store.write_item_factors(os_client, store, ["a1", "ghost"], factors)
    assert report.written == 1 and report.missing == ["ghost"]
    doc = os_client.get(index=index_name, id="a1")["_source"]
    assert doc["title"] == "a1" and doc["cf_vector"] == [1.0, 1.0, 1.0, 1.0]


def test_train_on_an_index_without_cf_vector_exits_2(os_client, index_name, tmp_path, monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    os_client.indices.create(index=index_name, body={"mappings": {"properties": {"title": {"type": "text"}}}})
    (tmp_path / "c.csv").write_text("user_id,item_id\nu,a\n")
    result = CliRunner().invoke(cf, ["train", str(tmp_path / "c.csv"), "--index", index_name])
    assert result.exit_code == 2 and "no cf_vector" in result.output


def test_train_cli_writes_popularity_and_neighbours(os_client, index_name, trained):
    from osreco.cf.priors import bump_popularity

    result, _ = trained
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["priors"]["written"] == 21 and summary["meta"]["popularity_ref"] == 1009.0
    docs = {h["_id"]: h["_source"] for h in os_client.search(index=index_name, body={"size": 50})["hits"]["hits"]}
    assert docs["b_new"]["popularity"] == 0.0 and all(docs[i]["popularity"] > 0 for i in GROUP_A + GROUP_B)
    assert "rating_avg" not in docs["a0"]  # every value is 1: implicit data has no ratings to average
    neighbours, scores = docs["a0"]["cf_neighbors"], docs["a0"]["cf_neighbor_scores"]
    assert neighbours and set(neighbours) <= set(GROUP_A) - {"a0"} and len(scores) == len(neighbours)
    assert scores == sorted(scores, reverse=True) and min(scores) > 0
    listing = {"size": 21, "_source": False, "sort": [{"popularity": {"order": "desc"}}, {"item_id": "asc"}]}
    order = [h["_id"] for h in os_client.search(index=index_name, body=listing)["hits"]["hits"]]
    assert order[-1] == "b_new"  # items without interactions list last
    bump_popularity(os_client, index_name, {"b_new": 100.0, "ghost": 1.0})
    os_client.indices.refresh(index=index_name)
    order = [h["_id"] for h in os_client.search(index=index_name, body=listing)["hits"]["hits"]]
    assert order[0] == "b_new"


def test_train_cli_adds_prior_fields_and_rating_avg_to_an_older_index(os_client, index_name, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    spec = IndexSpec(alias=index_name, dim=2, artifact_id="test-artifact", cf_dim=4)
    mappings = spec.mappings()
    for name in ("rating_avg", "cf_neighbors", "cf_neighbor_scores"):
        del mappings["properties"][name]  # an index created before these fields existed
    os_client.indices.create(index=index_name, body={"settings": spec.settings(), "mappings": mappings})
    bulk(os_client, ({"_index": index_name, "_id": it, "_source": {"item_id": it, "embedding": [1.0, 0.0]}}
                     for it in ("good", "bad", "other")), refresh=True)
    rows = ["user_id,item_id,value,timestamp"] + [f"u{u},good,5,{u}" for u in range(6)] + \
        [f"u{u},bad,1,{u}" for u in range(3)] + [f"u{u},other,3,{u}" for u in range(4)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(cf, ["train", str(tmp_path / "r.csv"), "--index", index_name, "--iterations", "2",
                                     "--json"])
    assert result.exit_code == 0, result.output
    props = os_client.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    assert props["rating_avg"]["type"] == "float" and props["cf_neighbors"]["type"] == "keyword"
    avg = {i: os_client.get(index=index_name, id=i)["_source"]["rating_avg"] for i in ("good", "bad", "other")}
    assert avg["good"] > avg["other"] > avg["bad"] and avg["good"] < 5.0  # shrunk toward the mean
    hits = os_client.search(index=index_name, body={"query": {"term": {"cf_neighbors": "good"}}})["hits"]["hits"]
    assert {h["_id"] for h in hits} >= {"other"}


def test_merge_seen_keeps_every_item_once_newest_last_within_the_limit():
    from osreco.cf.store import merge_seen

    assert merge_seen(["a", "b", "c"], ["b", "d"], 10) == ["a", "c", "b", "d"]
    assert merge_seen(["a", "b", "c"], ["b", "d"], 3) == ["c", "b", "d"]
    assert merge_seen([], ["x", "x"], 5) == ["x"]
