"""Events that can teach: query_id and positions in responses, the query log written by a
bounded background writer, UBI event kinds (impressions, skips, dwell) with their 400s, and
duplicates / unknown items / out-of-order events counted — real node, real gunicorn sidecar."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from opensearchpy import TransportError
from servers import gunicorn_sidecar

from osreco.cf.errors import InteractionError
from osreco.cf.events import Event, events_index, read_events, read_interactions_from_events, write_events
from osreco.cf.forget import write_tombstone
from osreco.cf.privacy import pseudonymize
from osreco.cf.querylog import SERVED_MIN, queries_index, query_doc, read_queries, write_queries
from osreco.plugin.fusion import Candidate
from osreco.plugin.metrics import Metrics
from osreco.plugin.querylog_writer import QueryLogWriter, served_entries

KEY = "querylog-test-hmac-key-0123456789abcdef"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _iso(seconds_ago: float = 0.0) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


# ---- pure parts: no node ----------------------------------------------------------------------

def test_served_entries_name_the_signals_and_rank_from_one():
    ranked = [Candidate(f"i{n}", 1.0 / n, ranks={"bm25": n, "cf": 3, "history": 1}) for n in range(1, 61)]
    served = served_entries(ranked, shown=10)
    assert len(served) == SERVED_MIN  # the candidates past the page, not only the page
    assert [s["position"] for s in served[:3]] == [1, 2, 3]
    assert served[0]["signals"] == {"bm25": 1, "dense": None, "taste": 3, "popularity": None}
    assert len(served_entries(ranked, shown=55)) == 55  # a deep page: every shown item is logged


def test_query_doc_refuses_a_raw_user_id_and_unknown_endpoints():
    with pytest.raises(InteractionError, match="pseudonym"):
        query_doc("a" * 32, "search", _iso(), [], {}, user_key="alice")
    with pytest.raises(InteractionError, match="endpoint"):
        query_doc("a" * 32, "browse", _iso(), [], {})
    doc = query_doc("a" * 32, "recommend", _iso(), [], {"taste": 1.0}, k=5)
    assert "user_key" not in doc and doc["query_class"] == "none"


def test_event_kinds_need_what_they_teach_with():
    key = pseudonymize("u1", KEY)
    with pytest.raises(InteractionError, match="query_id"):
        Event(key, "i1", "impression", _iso(), position=1)
    with pytest.raises(InteractionError, match="position"):
        Event(key, "i1", "impression", _iso(), query_id="q1")
    with pytest.raises(InteractionError, match="dwell"):
        Event(key, "i1", "dwell", _iso(), value=0.0)
    assert Event(key, "i1", "impression", _iso(), query_id="q1", position=2).training_value() == 0.0
    assert Event(key, "i1", "click", _iso()).training_value() == 1.0


@pytest.mark.parametrize("bad, field", [
    ({"kind": "impression", "position": 1}, "events[1].query_id"),
    ({"kind": "impression", "query_id": "q"}, "events[1].position"),
    ({"kind": "click", "position": 0}, "events[1].position"),
    ({"kind": "dwell", "value": -3}, "events[1].value"),
])
def test_the_batch_is_validated_whole_naming_the_field(bad, field):
    from osreco.plugin.config import Limits
    from osreco.plugin.errors import RequestError
    from osreco.plugin.schemas import parse_events

    good = {"user_id": "u1", "item_id": "i1", "kind": "click"}
    with pytest.raises(RequestError) as err:
        parse_events({"events": [good, {**good, **bad}]}, Limits())
    assert err.value.field == field
    dwell = parse_events({**good, "kind": "dwell", "value": 1e6}, Limits())[0]
    shown = parse_events({**good, "kind": "impression", "query_id": "q", "position": 1}, Limits())[0]
    assert dwell.value == 3600.0 and (shown.query_id, shown.position) == ("q", 1)


def test_the_writer_never_blocks_and_counts_what_it_drops():
    release = threading.Event()
    written: list[dict[str, Any]] = []

    def slow_write(docs: list[dict[str, Any]]) -> None:
        release.wait(10)
        written.extend(docs)

    metrics = Metrics()
    writer = QueryLogWriter(slow_write, metrics, maxsize=2, batch_size=1)
    results = [writer.submit({"query_id": str(n)}) for n in range(6)]  # the first is taken, two wait
    deadline = time.monotonic() + 5
    while writer.pending() > 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results.count(False) >= 3
    release.set()
    assert writer.drain(10)
    dropped = metrics.query_log.labels("dropped")._value.get()
    assert dropped == results.count(False) and len(written) == results.count(True)
    assert not QueryLogWriter(slow_write, Metrics(), maxsize=0).submit({"query_id": "x"})  # 0 = off


# ---- the node: read_events / read_queries ------------------------------------------------------

@pytest.mark.integration
def test_readers_order_by_timestamp_and_drop_forgotten_users(os_client, index_name):
    alice, bob = pseudonymize("alice", KEY), pseudonymize("bob", KEY)
    base = datetime.now(timezone.utc) - timedelta(hours=1)

    def at(minutes: int) -> str:
        return (base + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")

    write_events(os_client, index_name, [
        Event(alice, "i2", "click", at(50)), Event(bob, "i1", "click", at(30)),
        Event(alice, "i1", "impression", at(40), query_id="q-a", position=1)], refresh=True)
    write_queries(os_client, index_name, [
        query_doc("b" * 32, "search", at(55), [], {}, user_key=alice, query="late"),
        query_doc("a" * 32, "search", at(10), [], {}, user_key=bob, query="early"),
        query_doc("c" * 32, "recommend", at(20), [], {})])
    os_client.indices.refresh(index=queries_index(index_name))
    assert [e["item_id"] for e in read_events(os_client, index_name)] == ["i1", "i1", "i2"]
    assert [e["kind"] for e in read_events(os_client, index_name, kinds=["impression"])] == ["impression"]
    assert [q["query_id"][0] for q in read_queries(os_client, index_name)] == ["a", "c", "b"]
    assert [q["query_id"][0] for q in read_queries(os_client, index_name, since=at(20), until=at(55))] == ["c"]
    write_tombstone(os_client, index_name, bob, _iso())
    assert {e["user_id"] for e in read_events(os_client, index_name)} == {alice}
    assert [q.get("user_key") for q in read_queries(os_client, index_name)] == [None, alice]  # anonymous kept


@pytest.mark.integration
def test_logged_impressions_become_reranker_negatives_and_clicks_positives(os_client, index_name, tmp_path):
    import json

    from osreco.cf.querylog import with_query_text
    from osreco.training.data import TrainingItem
    from osreco.training.data import read_events as read_events_file
    from osreco.training.reranker import build_rerank_examples

    key, qid = pseudonymize("carol", KEY), "d" * 32
    write_queries(os_client, index_name, [query_doc(qid, "search", _iso(60), [], {}, user_key=key, query="space")])
    os_client.indices.refresh(index=queries_index(index_name))
    write_events(os_client, index_name, [
        Event(key, "i1", "impression", _iso(50), query_id=qid, position=1),
        Event(key, "i2", "impression", _iso(50), query_id=qid, position=2),
        Event(key, "i2", "click", _iso(40), query_id=qid, position=2)], refresh=True)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in with_query_text(os_client, index_name,
                                                                         read_events(os_client, index_name))))
    catalog = {i: TrainingItem(i, f"title {i}", f"text {i}") for i in ("i1", "i2")}
    examples = build_rerank_examples(list(read_events_file(path)), catalog, sampled_negatives=0)
    assert sorted((e.query, e.item_id, e.label) for e in examples) == [("space", "i1", 0.0), ("space", "i2", 1.0)]


# ---- the sidecar under gunicorn -----------------------------------------------------------------

@pytest.fixture(scope="module")
def sidecar(shop, opensearch_url):
    env = {"OPENSEARCH_URL": opensearch_url, "OSRECO_INDEX": shop.alias, "OSRECO_BUNDLE": shop.bundle,
           "OSRECO_STORE_PREFIX": shop.prefix, "OSRECO_DEV_MODE": "1", "OSRECO_HMAC_KEY": KEY,
           "OSRECO_FACETS": "brand,color,category,currency", "OSRECO_EMBED_VOCABULARY": "0",
           "OSRECO_BUNDLE_RELOAD_S": "0", "OPENBLAS_NUM_THREADS": "1"}
    with gunicorn_sidecar(env, workers=2, threads=4) as url:
        yield url


def _logged(client, prefix: str, query_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """The query-log document of ``query_id`` once the background writer stored it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc = client.get(index=queries_index(prefix), id=query_id, ignore=[404])
        except TransportError:  # the index was just created: its shard may still be starting
            doc = {}
        if doc.get("found"):
            return doc["_source"]
        time.sleep(0.2)
    pytest.fail(f"query {query_id} was never logged")


@pytest.mark.integration
def test_search_carries_query_id_positions_and_is_logged_with_signal_ranks(sidecar, shop, os_client):
    user = f"u-{uuid.uuid4().hex[:8]}"
    resp = requests.post(f"{sidecar}/v1/search", json={"q": "comfortable shoes", "user_id": user, "k": 3, "page": 2},
                         timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert HEX32.match(body["query_id"])
    assert [r["position"] for r in body["results"]] == [4, 5, 6]  # absolute across pages
    doc = _logged(os_client, shop.prefix, body["query_id"])
    assert doc["endpoint"] == "search" and doc["query"] == "comfortable shoes" and doc["page"] == 2
    assert doc["user_key"] == pseudonymize(user, KEY) and doc["query_class"] == body["query_class"]
    served = doc["served"]
    assert len(served) > 6 and [s["position"] for s in served] == list(range(1, len(served) + 1))
    assert [s["item_id"] for s in served[3:6]] == [r["item_id"] for r in body["results"]]
    assert all(set(s["signals"]) >= {"bm25", "dense", "taste", "popularity"} for s in served)
    ranks = [s["signals"]["bm25"] for s in served if s["signals"]["bm25"] is not None]
    assert ranks and all(isinstance(r, int) and r >= 1 for r in ranks)
    assert doc["fusion"]["bm25"] > 0 and doc["fusion"]["rrf_k"] >= 1

    anon = requests.post(f"{sidecar}/v1/search", json={"q": "shoes"}, timeout=30).json()
    assert "user_key" not in _logged(os_client, shop.prefix, anon["query_id"])


@pytest.mark.integration
def test_recommend_and_similar_are_logged_and_a_failed_request_stores_nothing(sidecar, shop, os_client):
    rec = requests.get(f"{sidecar}/v1/recommend", params={"user_id": "u-rec", "k": 3}, timeout=30).json()
    assert HEX32.match(rec["query_id"]) and [r["position"] for r in rec["results"]] == [1, 2, 3]
    doc = _logged(os_client, shop.prefix, rec["query_id"])
    assert doc["endpoint"] == "recommend" and doc["query_class"] == "none" and len(doc["served"]) >= 3
    sim = requests.get(f"{sidecar}/v1/items/shoe-asics-jolt-red/similar", params={"k": 4}, timeout=30).json()
    doc = _logged(os_client, shop.prefix, sim["query_id"])
    assert doc["endpoint"] == "similar" and doc["item_id"] == "shoe-asics-jolt-red"
    assert [s["item_id"] for s in doc["served"]] == [r["item_id"] for r in sim["results"]]

    missing = requests.get(f"{sidecar}/v1/items/no-such-item/similar", timeout=30)
    assert missing.status_code == 404 and "query_id" not in missing.json()
    requests.post(f"{sidecar}/v1/search", json={"q": "shoes", "k": 1}, timeout=30)  # flushes after the 404
    time.sleep(1.0)
    os_client.indices.refresh(index=queries_index(shop.prefix))
    hits = os_client.count(index=queries_index(shop.prefix), body={"query": {"term": {"item_id": "no-such-item"}}})
    assert hits["count"] == 0
    metrics = requests.get(f"{sidecar}/metrics", timeout=30).text
    assert re.search(r'osreco_query_log_total\{result="written"\} [1-9]', metrics), metrics[-2000:]


@pytest.mark.integration
def test_impressions_and_clicks_with_query_id_are_stored(sidecar, shop, os_client):
    user = f"u-{uuid.uuid4().hex[:8]}"
    body = requests.post(f"{sidecar}/v1/search", json={"q": "shoes", "user_id": user, "k": 3}, timeout=30).json()
    qid, shown = body["query_id"], body["results"]
    batch = [{"user_id": user, "item_id": r["item_id"], "kind": "impression", "query_id": qid,
              "position": r["position"]} for r in shown]
    batch += [{"user_id": user, "item_id": shown[1]["item_id"], "kind": "click", "query_id": qid, "position": 2},
              {"user_id": user, "item_id": shown[2]["item_id"], "kind": "skip", "query_id": qid, "position": 3},
              {"user_id": user, "item_id": shown[1]["item_id"], "kind": "dwell", "value": 7200, "query_id": qid}]
    resp = requests.post(f"{sidecar}/v1/events", json={"events": batch}, timeout=30)
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert answer["accepted"] == 6 and answer["duplicates"] == 0 and answer["unknown_items"] == 0
    os_client.indices.refresh(index=events_index(shop.prefix))
    stored = os_client.search(index=events_index(shop.prefix), body={
        "size": 20, "query": {"term": {"user_key": pseudonymize(user, KEY)}}})["hits"]["hits"]
    kinds = sorted(h["_source"]["kind"] for h in stored)
    assert kinds == ["click", "dwell", "impression", "impression", "impression", "skip"]
    assert all(h["_source"]["query_id"] == qid for h in stored)
    assert [h["_source"]["value"] for h in stored if h["_source"]["kind"] == "dwell"] == [3600.0]  # capped
    # training reads the click as an interaction, never the impressions, the skip or the dwell
    rows = list(read_interactions_from_events(os_client, shop.prefix, pseudonymize(user, KEY)))
    assert [(r.item_id, r.value) for r in rows] == [(shown[1]["item_id"], 1.0)]


@pytest.mark.integration
@pytest.mark.parametrize("bad, field", [
    ({"kind": "impression", "position": 1}, "events[1].query_id"),
    ({"kind": "impression", "query_id": "q"}, "events[1].position"),
    ({"kind": "click", "position": 0}, "events[1].position"),
    ({"kind": "dwell"}, "events[1].value"),
    ({"kind": "dwell", "value": 0}, "events[1].value"),
])
def test_bad_events_are_a_400_naming_the_field_and_store_nothing(sidecar, shop, os_client, bad, field):
    user = f"u-{uuid.uuid4().hex[:8]}"
    good = {"user_id": user, "item_id": "shoe-asics-jolt-red", "kind": "click"}
    resp = requests.post(f"{sidecar}/v1/events", json={"events": [good, {**good, **bad}]}, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["field"] == field
    if os_client.indices.exists(index=events_index(shop.prefix)):
        os_client.indices.refresh(index=events_index(shop.prefix))
        hits = os_client.count(index=events_index(shop.prefix),
                               body={"query": {"term": {"user_key": pseudonymize(user, KEY)}}})
        assert hits["count"] == 0


@pytest.mark.integration
def test_duplicates_unknown_items_and_late_events_are_counted(sidecar, shop, os_client):
    user = f"u-{uuid.uuid4().hex[:8]}"
    click = {"user_id": user, "item_id": "shoe-asics-jolt-red", "kind": "click", "event_id": f"e-{user}",
             "timestamp": _iso(10)}
    first = requests.post(f"{sidecar}/v1/events", json={"events": [click]}, timeout=30).json()
    assert first["accepted"] == 1 and first["duplicates"] == 0
    os_client.indices.refresh(index=events_index(shop.prefix))
    again = requests.post(f"{sidecar}/v1/events", json={"events": [
        click, {"user_id": user, "item_id": "not-in-the-catalog", "kind": "click", "timestamp": _iso(5)},
        {"user_id": user, "item_id": "shoe-asics-jolt-red", "kind": "view", "timestamp": _iso(3600)}]},
        timeout=30).json()
    assert again["duplicates"] == 1 and again["accepted"] == 2, again
    assert again["unknown_items"] == 1 and again["out_of_order"] == 1, again
    os_client.indices.refresh(index=events_index(shop.prefix))
    key = pseudonymize(user, KEY)
    stored = os_client.search(index=events_index(shop.prefix), body={"size": 10, "query": {"term": {"user_key": key}}})
    assert stored["hits"]["total"]["value"] == 3  # the repeated click is stored once
    flagged = [h["_source"]["item_id"] for h in stored["hits"]["hits"] if h["_source"].get("unknown_item")]
    assert flagged == ["not-in-the-catalog"]
    assert "not-in-the-catalog" not in {r.item_id for r in read_interactions_from_events(os_client, shop.prefix, key)}
    times = [e["timestamp"] for e in read_events(os_client, shop.prefix, include_unknown=True) if e["user_id"] == key]
    assert times == sorted(times) and len(times) == 3


@pytest.mark.integration
def test_forget_removes_the_users_query_log(sidecar, shop, os_client):
    user = f"u-{uuid.uuid4().hex[:8]}"
    qid = requests.post(f"{sidecar}/v1/search", json={"q": "shoes", "user_id": user}, timeout=30).json()["query_id"]
    _logged(os_client, shop.prefix, qid)
    resp = requests.delete(f"{sidecar}/v1/users/{user}", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["deleted"].get(queries_index(shop.prefix)) == 1
    assert not os_client.exists(index=queries_index(shop.prefix), id=qid)
    # a forgotten user's later searches are logged without them
    later = requests.post(f"{sidecar}/v1/search", json={"q": "shoes", "user_id": user}, timeout=30).json()
    assert "user_key" not in _logged(os_client, shop.prefix, later["query_id"])
