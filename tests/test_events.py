"""Events index, forgetting a user everywhere, retention — against the real node."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timedelta, timezone

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from click.testing import CliRunner

from osreco.cf import store as cf_store
from osreco.cf.cli import cf, users
from osreco.cf.errors import InteractionError
from osreco.cf.events import (
    Event,
    events_index,
    expire_events,
    from_ubi,
    read_interactions_from_events,
    write_events,
)
from osreco.cf.forget import forget, forgotten_index
from osreco.cf.privacy import PrivacyConfig, pseudonymize
from osreco.ingest.errors import ConfigError

pytestmark = pytest.mark.integration

KEY = "test-key-0123456789abcdef0123456789"
PRIVACY = PrivacyConfig.from_env(KEY)


def _iso(days_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).isoformat(timespec="seconds")


def _seed_user(client, prefix: str, raw_id: str, items: list[str]) -> str:
    key = PRIVACY.pseudonymize(raw_id)
    write_events(client, prefix, [Event(key, it, "click", _iso(n), query=f"q{n}", position=n + 1, session_id="s1")
                                  for n, it in enumerate(items)], refresh=True)
    store = cf_store.StoreConfig(prefix=prefix, item_index=prefix)
    cf_store.write_user_vectors(client, store, [key], np.ones((1, 4), np.float32), {key: items})
    return key


def _traces(client, needle: str, skip: str | None = None) -> int:
    """Hits for ``needle`` in every index (``_all``): as _id, as user_key, or in any field.

    ``skip`` leaves out one index (the item index that deliberately holds an item with that id).
    """
    should = [{"ids": {"values": [needle]}}, {"term": {"user_key": needle}},
              {"multi_match": {"query": needle, "fields": ["*"], "lenient": True, "type": "phrase"}}]
    query: dict = {"bool": {"should": should, "minimum_should_match": 1}}
    if skip:
        query["bool"]["must_not"] = [{"term": {"_index": skip}}]
    return client.search(index="_all", body={"query": query}, expand_wildcards="all")["hits"]["total"]["value"]


def test_forget_leaves_no_trace_in_any_index(os_client, index_name):
    alice = f"alice-{uuid.uuid4().hex[:8]}"
    os_client.index(index=f"{index_name}-v1", id=alice, body={"title": "an item whose id is the user's id"},
                    refresh=True)
    key = _seed_user(os_client, index_name, alice, ["i1", "i2", "i3"])
    bob_key = _seed_user(os_client, index_name, f"bob-{uuid.uuid4().hex[:8]}", ["i1"])
    assert _traces(os_client, key) > 0 and _traces(os_client, alice, f"{index_name}-v1") == 0  # raw id never stored
    report = forget(os_client, index_name, alice, PRIVACY)
    assert report.deleted == {f"{index_name}-events": 3, f"{index_name}-users": 1}
    # the one trace left is the tombstone: ``_id`` = pseudonym, nothing but the time
    assert _traces(os_client, key) == 1 and _traces(os_client, alice, f"{index_name}-v1") == 0
    assert os_client.get(index=forgotten_index(index_name), id=key)["_source"].keys() == {"forgotten_at"}
    assert os_client.exists(index=f"{index_name}-v1", id=alice)  # an item that shares the id is kept
    assert _traces(os_client, bob_key) == 2  # other users are untouched


def test_forget_cli_also_rewrites_a_saved_model(os_client, index_name, tmp_path, monkeypatch):
    from osreco.cf.interactions import Interaction
    from osreco.cf.model import CFConfig, CFModel
    from osreco.cf.train import train_models

    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    carol = f"carol-{uuid.uuid4().hex[:8]}"  # unique: _traces searches every index on the node
    key = _seed_user(os_client, index_name, carol, ["i1"])
    model = train_models([Interaction(key, "i1", 1.0, 0.0), Interaction("u_other", "i2", 1.0, 0.0)],
                         CFConfig(factors=2, iterations=2, threads=1))
    model.save(tmp_path)
    result = CliRunner().invoke(users, ["forget", carol, "--index", index_name, "--model-dir", str(tmp_path),
                                        "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"] == 2
    assert CFModel.load(tmp_path).user_vector(key) is None
    assert _traces(os_client, key) == 1  # the tombstone only
    assert os_client.exists(index=forgotten_index(index_name), id=key)


def test_retention_expires_only_old_events(os_client, index_name):
    key = PRIVACY.pseudonymize("dave")
    write_events(os_client, index_name, [Event(key, "old", "view", _iso(400)), Event(key, "new", "view", _iso(1))],
                 refresh=True)
    assert expire_events(os_client, index_name, days=365) == 1
    left = [e.item_id for e in read_interactions_from_events(os_client, index_name)]
    assert left == ["new"]
    with pytest.raises(ConfigError):
        expire_events(os_client, index_name, days=0)


def test_events_feed_training_with_kind_weights(os_client, index_name):
    key = PRIVACY.pseudonymize("erin")
    write_events(os_client, index_name, [Event(key, "i1", "purchase", "2024-05-01T00:00:00Z"),
                                         Event(key, "i2", "rating", "2024-05-02T00:00:00Z", value=4.5)], refresh=True)
    rows = sorted(read_interactions_from_events(os_client, index_name), key=lambda e: e.item_id)
    assert [(e.user_id, e.item_id, e.value, e.timestamp) for e in rows] == [
        (key, "i1", 4.0, 1714521600.0), (key, "i2", 4.5, 1714608000.0)]


def test_events_mapping_rejects_raw_ids_and_unknown_kinds():
    with pytest.raises(InteractionError, match="not a pseudonym"):
        Event("alice", "i1", "click", _iso(0))
    with pytest.raises(InteractionError, match="kind 'like'"):
        Event(PRIVACY.pseudonymize("a"), "i1", "like", _iso(0))


def test_ubi_event_converts_and_is_pseudonymized():
    ubi = {"action_name": "click", "client_id": "browser-7", "query_id": "q-1", "session_id": "s-9",
           "timestamp": "2024-05-01T10:00:00Z", "user_query": "space movies",
           "event_attributes": {"object": {"object_id": "m42", "object_id_field": "item_id"},
                                "position": {"ordinal": 3}}}
    event = from_ubi(ubi, PRIVACY)
    assert event == Event(PRIVACY.pseudonymize("browser-7"), "m42", "click", "2024-05-01T10:00:00Z",
                          query="space movies", query_id="q-1", position=3, session_id="s-9")


def test_train_from_events_cli(os_client, index_name, monkeypatch):
    from test_cf_store import GROUP_A, GROUP_B, make_item_index

    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    make_item_index(os_client, index_name)
    events = []
    for group, items in (("A", GROUP_A), ("B", GROUP_B)):
        for u in range(6):
            key = PRIVACY.pseudonymize(f"{group}{u}")
            events += [Event(key, it, "click", f"2024-05-0{1 + t % 9}T00:00:00Z") for t, it in enumerate(items)
                       if t != u]
    write_events(os_client, index_name, events, refresh=True)
    result = CliRunner().invoke(cf, ["train", "--from-events", "--index", index_name, "--iterations", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["read"]["source"] == events_index(index_name)
    assert summary["users"]["written"] == 12 and summary["items"]["written"] == 21


def test_train_from_missing_events_index_exits_2(os_client, index_name, monkeypatch):
    from test_cf_store import make_item_index

    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    make_item_index(os_client, index_name)
    result = CliRunner().invoke(cf, ["train", "--from-events", "--index", index_name])
    assert result.exit_code == 2 and "no events index" in result.output


def test_forget_refuses_a_wildcard_prefix(os_client):
    with pytest.raises(ConfigError, match="no wildcards"):
        forget(os_client, "*", "alice", PRIVACY)


# ---- POST /v1/events: validated whole, stored once, folded in off the request thread ----------


def _events_app(os_client, index_name, tmp_path, **overrides):
    """The real sidecar over ``index_name`` with a small trained CF model (items i1..i4)."""
    from osreco.cf.interactions import Interaction
    from osreco.cf.model import CFConfig
    from osreco.cf.train import train_models
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    os_client.indices.create(index=index_name, body={"mappings": {"properties": {"popularity": {"type": "float"}}}})
    rows = [Interaction(f"u_seed{u}", f"i{i}", 1.0, 0.0) for u in range(4) for i in range(1, 5) if i != u + 1]
    train_models(rows, CFConfig(factors=2, iterations=2, threads=1)).save(tmp_path / "cf")
    url = os_client.transport.hosts[0]
    config = SidecarConfig(opensearch=OpenSearchConfig(url=f"http://{url['host']}:{url['port']}"), alias=index_name,
                           cf_model_dir=str(tmp_path / "cf"), dev_mode=True, embed_vocabulary=False,
                           bundle_reload_s=0, **overrides)
    return create_app(config)


def _stored(os_client, index_name) -> list[dict]:
    name = events_index(index_name)
    if not os_client.indices.exists(index=name):
        return []
    os_client.indices.refresh(index=name)
    return [h["_source"] for h in os_client.search(index=name, body={"size": 100})["hits"]["hits"]]


def test_one_bad_event_is_a_400_naming_it_and_nothing_is_stored(os_client, index_name, tmp_path):
    client = _events_app(os_client, index_name, tmp_path).test_client()
    good = {"user_id": "u-bad", "item_id": "i1", "kind": "click", "timestamp": "2024-05-01T10:00:00Z"}
    for bad, field in ((dict(good, timestamp="2999-01-01T00:00:00Z"), "timestamp"),
                       (dict(good, timestamp="9999-12-31"), "timestamp"),
                       (dict(good, timestamp="2024-05-01T10:00:00+25:00"), "timestamp"),
                       (dict(good, timestamp="1969-12-31T23:59:59Z"), "timestamp"),
                       (dict(good, value=1e308), "value"),
                       (dict(good, event_id="a\x01b"), "event_id")):
        resp = client.post("/v1/events", json={"events": [good, good, bad]})
        assert resp.status_code == 400, (bad, resp.get_json())
        assert resp.get_json()["error"]["field"] == f"events[2].{field}"
    assert _stored(os_client, index_name) == []


def test_offsets_are_normalized_to_utc(os_client, index_name, tmp_path):
    client = _events_app(os_client, index_name, tmp_path).test_client()
    resp = client.post("/v1/events", json={"events": [
        {"user_id": "u-tz", "item_id": "i1", "kind": "click", "timestamp": "2024-05-01T10:00:00+05:30:15"},
        {"user_id": "u-tz", "item_id": "i2", "kind": "click", "timestamp": 1714557600}]})
    assert resp.status_code == 202, resp.get_json()
    assert sorted(e["timestamp"] for e in _stored(os_client, index_name)) == [
        "2024-05-01T04:29:45Z", "2024-05-01T10:00:00Z"]


def test_a_batch_posted_three_times_is_stored_once(os_client, index_name, tmp_path):
    client = _events_app(os_client, index_name, tmp_path).test_client()
    with_ids = [{"user_id": "u-a", "item_id": "i1", "kind": "click", "event_id": "evt-1"},
                {"user_id": "u-a", "item_id": "i2", "kind": "click", "event_id": "evt-2"}]
    derived = [{"user_id": "u-b", "item_id": "i1", "kind": "view", "timestamp": "2024-05-01T10:00:00Z"},
               {"user_id": "u-b", "item_id": "i3", "kind": "rating", "value": 4.0, "timestamp": 1714557600}]
    while datetime.now(timezone.utc).second >= 50:  # no timestamp: hashed with the arrival minute
        time.sleep(1)
    no_time = [{"user_id": "u-c", "item_id": "i4", "kind": "purchase"}]
    for batch in (with_ids, derived, no_time):
        bodies = [client.post("/v1/events", json={"events": batch}).get_json() for _ in range(3)]
        assert [(b["accepted"], b["duplicates"]) for b in bodies] == [(len(batch), 0)] + [(0, len(batch))] * 2
    stored = _stored(os_client, index_name)
    assert len(stored) == 5
    assert {e["event_id"] for e in stored} >= {"evt-1", "evt-2"}


def test_a_full_fold_in_queue_is_a_429_and_stores_nothing(os_client, index_name, tmp_path):
    from osreco.plugin.config import Limits

    app = _events_app(os_client, index_name, tmp_path, foldin_queue=2, limits=Limits(max_events=2))
    app.extensions["osreco.services"].users.foldin.reserve(["u_other"])  # another request holds one slot
    batch = [{"user_id": f"u-q{n}", "item_id": "i1", "kind": "click"} for n in range(2)]
    resp = app.test_client().post("/v1/events", json={"events": batch})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert resp.get_json()["error"]["code"] == "overloaded"
    assert _stored(os_client, index_name) == []


def test_a_fold_in_queue_smaller_than_a_batch_is_refused_at_startup():
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.plugin.config import Limits, SidecarConfig

    with pytest.raises(ConfigError, match="OSRECO_MAX_EVENTS") as err:
        SidecarConfig(opensearch=OpenSearchConfig(url="http://127.0.0.1:1"), alias="x", dev_mode=True,
                      foldin_queue=10, limits=Limits(max_events=11))
    assert err.value.field == "OSRECO_FOLDIN_QUEUE" and "OSRECO_FOLDIN_QUEUE" in str(err.value)
    SidecarConfig(opensearch=OpenSearchConfig(url="http://127.0.0.1:1"), alias="x", dev_mode=True,
                  foldin_queue=11, limits=Limits(max_events=11))


class _RefusingBulk:
    """Wraps the real client; its ``bulk`` answers every item with ``status`` (a node under load)."""

    def __init__(self, real, status: int, error_type: str):
        self._real, self.status, self.error_type = real, status, error_type

    def __getattr__(self, name):
        return getattr(self._real, name)

    def bulk(self, body, **_):
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        items = [{op: {"_index": meta["_index"], "_id": meta.get("_id"), "status": self.status,
                       "error": {"type": self.error_type, "reason": "node internals: queue capacity 200"}}}
                 for line in lines[::2] for op, meta in line.items()]
        return {"errors": True, "items": items}


@pytest.mark.parametrize("status,error_type,code,http", [
    (429, "es_rejected_execution_exception", "node_unavailable", 503),
    (503, "unavailable_shards_exception", "node_unavailable", 503),
    (400, "mapper_parsing_exception", "upstream_error", 502)])
def test_events_refused_by_the_node_are_a_503_or_502_never_a_500(os_client, index_name, tmp_path,
                                                                  status, error_type, code, http):
    app = _events_app(os_client, index_name, tmp_path)
    transport = app.extensions["osreco.services"].users.transport
    transport.client = _RefusingBulk(transport.client, status, error_type)
    users_ = app.extensions["osreco.services"].users
    resp = app.test_client().post("/v1/events", json={"events": [
        {"user_id": "u-busy", "item_id": "i1", "kind": "click", "event_id": "evt-busy"}]})
    assert resp.status_code == http, resp.get_data(as_text=True)
    body = resp.get_json()["error"]
    assert body["code"] == code and "queue capacity" not in json.dumps(body)  # no node text
    if http == 503:
        assert resp.headers["Retry-After"] == str(transport.retry_after_s) and "event_id" in body["fix"]
    assert users_.foldin.pending() == 0 and users_.foldin._reserved == 0  # the reservation was released


def test_a_forget_between_the_check_and_the_write_leaves_no_events(os_client, index_name, tmp_path, monkeypatch):
    from osreco.cf import events as ev_module

    app = _events_app(os_client, index_name, tmp_path)
    users_ = app.extensions["osreco.services"].users
    real_write = ev_module.write_events

    def forget_then_write(client, prefix, docs, **kw):  # the forget lands after the tombstone check
        forget(client, prefix, "u-racer", PrivacyConfig(users_.hmac_key.encode("utf-8")))
        return real_write(client, prefix, docs, **kw)

    monkeypatch.setattr(ev_module, "write_events", forget_then_write)
    resp = app.test_client().post("/v1/events", json={"events": [
        {"user_id": "u-racer", "item_id": "i1", "kind": "click"},
        {"user_id": "u-stays", "item_id": "i2", "kind": "click"}]})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    out = resp.get_json()
    assert (out["accepted"], out["forgotten"], out["queued_users"]) == (1, 1, 1)
    stored = _stored(os_client, index_name)
    assert [e["user_key"] for e in stored] == [pseudonymize("u-stays", users_.hmac_key)]


def test_fold_in_runs_off_the_request_thread(os_client, index_name, tmp_path):
    import threading

    app = _events_app(os_client, index_name, tmp_path)
    users_ = app.extensions["osreco.services"].users
    gate, ran_on, niceness = threading.Event(), [], []
    real_fold = users_.foldin.fold

    def held_fold(keys, deltas):
        ran_on.append(threading.get_ident())
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert gate.wait(60)
        real_fold(keys, deltas)

    users_.foldin.fold = held_fold
    resp = app.test_client().post("/v1/events", json={"events": [
        {"user_id": "u-off", "item_id": "i1", "kind": "click"},
        {"user_id": "u-off", "item_id": "i2", "kind": "click"}]})
    assert resp.status_code == 202 and resp.get_json()["queued_users"] == 1
    key = pseudonymize("u-off", users_.hmac_key)
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    assert cf_store.read_user_vector(os_client, store, key) is None  # answered before the fold-in
    gate.set()
    assert users_.foldin.drain(60)
    assert ran_on and ran_on[0] != threading.get_ident()
    # the background thread yields the CPU to request threads (and a node on the same cores)
    assert niceness[0] == min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + 10)
    folded = cf_store.read_user(os_client, store, key)
    assert sorted(folded["history"]) == ["i1", "i2"] and len(folded["cf_vector"]) == 2  # same arrival time
    assert os_client.get(index=index_name, id="i1", ignore=[404]).get("found") is False  # not in the item index


def test_expire_deletes_future_dated_events(os_client, index_name):
    key = PRIVACY.pseudonymize("fred")
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat(timespec="seconds")
    write_events(os_client, index_name, [Event(key, "far", "view", "2999-01-01T00:00:00Z"),
                                         Event(key, "soon", "view", future), Event(key, "now", "view", _iso(0))],
                 refresh=True)
    assert expire_events(os_client, index_name, days=365) == 2
    assert [e.item_id for e in read_interactions_from_events(os_client, index_name)] == ["now"]


def test_an_older_strict_events_index_gets_the_event_id_field(os_client, index_name):
    from osreco.cf.events import EVENTS_MAPPING

    old = {**EVENTS_MAPPING, "properties": {k: v for k, v in EVENTS_MAPPING["properties"].items() if k != "event_id"}}
    os_client.indices.create(index=events_index(index_name), body={"mappings": old})
    event = Event(PRIVACY.pseudonymize("gus"), "i1", "click", _iso(0))
    assert write_events(os_client, index_name, [event, event], refresh=True).duplicates == 1
    assert os_client.count(index=events_index(index_name))["count"] == 1


def test_events_keep_popularity_current_in_stored_units(os_client, index_name, tmp_path):
    from osreco.cf.priors import event_delta

    app = _events_app(os_client, index_name, tmp_path)
    for item, pop in (("i1", 5.0), ("i2", 1.0)):
        os_client.index(index=index_name, id=item, body={"popularity": pop})
    ref = time.time() - 86400.0  # the training's reference time: one day ago
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    cf_store.write_meta(os_client, store, {"popularity_ref": ref, "popularity_half_life_days": 30.0})
    now = datetime.now(timezone.utc).replace(microsecond=0)
    events = [{"user_id": f"u-pop{n}", "item_id": "i2", "kind": "click", "timestamp": now.isoformat()}
              for n in range(6)]
    resp = app.test_client().post("/v1/events", json={"events": events})
    assert resp.status_code == 202, resp.get_json()
    app.test_client().post("/v1/events", json={"events": events})  # a retry adds nothing
    assert app.extensions["osreco.services"].users.foldin.drain(60)
    pops = {i: os_client.get(index=index_name, id=i)["_source"]["popularity"] for i in ("i1", "i2")}
    expected = 1.0 + 6 * event_delta(now.timestamp(), ref, 30.0)  # each new event once, decayed like training
    assert pops["i1"] == 5.0 and pops["i2"] == pytest.approx(expected, rel=1e-4)
