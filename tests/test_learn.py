"""`osreco learn` against the real node and a real gunicorn sidecar: logged traffic in (events and
query-log documents of the contract's shape, indexed here), popularity, a CF model and tuned fusion
weights out; the sidecar serves them after its reload timer, without a restart; a killed run
changes nothing and the next one redoes the same data; a worse candidate is refused; forgotten
users' events are left out of everything."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from opensearchpy.helpers import bulk

from osreco.cf.events import ensure_events_index
from osreco.cf.forget import write_tombstone
from osreco.cf.model import CFModel
from osreco.cf.privacy import pseudonymize
from osreco.cf.querylog import ensure_queries_index
from osreco.exporter.encoder import Encoder
from osreco.ingest.catalog import FieldMap, read_catalog
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.rebuild import ensure_index
from osreco.ingest.writer import WriteConfig, index_items
from osreco.learning import learn as learn_mod
from osreco.learning.history import history_table, read_history
from osreco.learning.learn import LearnConfig, load_state, run_learn
from osreco.learning.logs import iso
from osreco.learning.tune import heldout
from osreco.plugin.config import DEV_HMAC_KEY
from osreco.plugin.fusion import FusionSettings
from osreco.plugin.settings_store import class_weights, read_fusion

pytestmark = pytest.mark.integration

ITEMS = [f"i{n:02d}" for n in range(24)]
PRIVATE = "i23"                    # only the forgotten user ever clicks it
CURVE = [1.0, 0.8, 0.65, 0.5, 0.4, 0.33, 0.28, 0.24, 0.2, 0.17, 0.15, 0.13]
HAND = FusionSettings(bm25_weight=1.0, dense_weight=0.1)   # the configured weights: lexical first
QUERIES = {f"query {n}": [ITEMS[(3 * n + j) % 20] for j in range(3)] for n in range(8)}  # text -> relevant items


@pytest.fixture(scope="module")
def learn_shop(os_client, tiny_bundle, tmp_path_factory):
    alias = f"t-learn-{uuid.uuid4().hex[:8]}"
    work = tmp_path_factory.mktemp("learn")
    path = work / "items.jsonl"
    path.write_text("".join(json.dumps({"item_id": i, "title": f"item {i}", "text": f"thing {i}"}) + "\n"
                            for i in ITEMS), encoding="utf-8")
    enc = Encoder(tiny_bundle, threads=1)
    spec = IndexSpec.from_encoder(enc, alias, cf_dim=4)
    assert index_items(os_client, enc, ensure_index(os_client, spec), read_catalog(path, FieldMap()), WriteConfig()).ok
    yield SimpleNamespace(alias=alias, prefix=f"{alias}-s", bundle=str(tiny_bundle), work=work)
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


def _users(n: int, held: bool | None, tag: str) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        key = pseudonymize(f"{tag}-{i}", DEV_HMAC_KEY)
        if held is None or heldout(key) == held:
            out.append(key)
        i += 1
    return out


def _traffic(rng: np.random.Generator, users: list[str], at: datetime, follow_dense: bool
             ) -> tuple[list[dict], list[dict]]:
    """Two searches per user: 12 of 20 candidates shown in a random (bm25) order; the relevant
    items have the best dense ranks when ``follow_dense`` (else the best bm25 ranks); clicks are
    drawn from relevance x :data:`CURVE`. Returns (events, query-log documents)."""
    events, queries = [], []
    for u_i, user in enumerate(users):
        for r in range(3):
            text = list(QUERIES)[(u_i + r) % len(QUERIES)]
            relevant = QUERIES[text]
            cands = list(rng.permutation(ITEMS[:20]))
            if not follow_dense:   # the relevant items lead the logged (bm25) order
                cands = relevant + [c for c in cands if c not in relevant]
            dense = relevant + [c for c in rng.permutation(ITEMS[:20]) if c not in relevant]
            qid = uuid.uuid4().hex
            ts = iso(at + timedelta(seconds=u_i * 10 + r))
            served = [{"item_id": c, "position": p, "score": 1.0 / p,
                       "signals": {"bm25": p, "dense": dense.index(c) + 1, "taste": None, "popularity": None}}
                      for p, c in enumerate(cands, 1)]
            queries.append({"query_id": qid, "user_key": user, "timestamp": ts, "endpoint": "search",
                            "query": text, "query_class": "text", "language": "en", "k": 12, "page": 1,
                            "served": served})
            for p, c in enumerate(cands[:12], 1):
                events.append({"user_key": user, "item_id": c, "kind": "impression", "value": 1.0, "timestamp": ts,
                               "query_id": qid, "position": p, "query": text})
                rel = 0.9 if c in relevant else 0.05
                if rng.random() < CURVE[p - 1] * rel:
                    events.append({"user_key": user, "item_id": c, "kind": "click", "value": 1.0, "timestamp": ts,
                                   "query_id": qid, "position": p, "query": text})
    return events, queries


def _index(client, prefix: str, events: list[dict], queries: list[dict]) -> None:
    ensure_events_index(client, prefix)
    qindex = ensure_queries_index(client, prefix)
    actions = [{"_index": f"{prefix}-events", "_id": uuid.uuid4().hex, "_source": e} for e in events]
    actions += [{"_index": qindex, "_id": q["query_id"], "_source": q} for q in queries]
    bulk(client, actions, refresh="wait_for")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _wait(check, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _popularity(client, alias: str) -> dict[str, float]:
    hits = client.search(index=alias, body={"size": 100, "_source": ["popularity"]})["hits"]["hits"]
    return {h["_id"]: float(h["_source"].get("popularity") or 0.0) for h in hits}


def test_learn_promotes_what_helps_refuses_what_does_not_and_the_sidecar_follows(learn_shop, os_client, opensearch_url,
                                                                                  monkeypatch):
    from servers import gunicorn_sidecar

    s, rng = learn_shop, np.random.default_rng(11)
    now = datetime.now(timezone.utc)
    day1 = now - timedelta(hours=3)
    events, queries = _traffic(rng, _users(80, None, "a"), day1, follow_dense=True)
    gone = pseudonymize("forget-me", DEV_HMAC_KEY)
    events += [{"user_key": gone, "item_id": PRIVATE, "kind": "click", "value": 1.0,
                "timestamp": iso(day1 + timedelta(seconds=s_)), "query_id": "gone-q"} for s_ in range(5)]
    _index(os_client, s.prefix, events, queries)
    write_tombstone(os_client, s.prefix, gone, iso(now))
    model_dir = s.work / "cf"
    config = LearnConfig(index=s.alias, prefix=s.prefix, state_dir=str(s.work / "state"), model_dir=str(model_dir),
                         until=iso(now - timedelta(hours=2)), window_days=1.0, hand=HAND)

    # run 1: first CF model, popularity, tuned weights for the text class
    rec1 = run_learn(config, os_client)
    assert rec1["promoted"] == ["cf", "fusion"], json.dumps({k: rec1[k] for k in ("metrics", "data", "refused")})
    assert rec1["data"]["queries"] == len(queries) and rec1["data"]["events"] == len(events) - 5
    model = CFModel.load(model_dir)
    assert gone not in set(model.user_keys.tolist()) and model.meta["learn_run"] == rec1["run_id"]
    pop = _popularity(os_client, s.alias)
    clicks = [e["item_id"] for e in events if e["kind"] == "click" and e["user_key"] != gone]
    top = max(set(clicks), key=clicks.count)
    assert pop[PRIVATE] == 0.0 and pop[top] == max(pop.values()) > 0
    text = rec1["metrics"]["fusion"]["classes"]["text"]
    assert text["promote"] and text["heldout"]["tuned"] > text["heldout"]["current"]
    assert text["tuned"]["dense"] > text["tuned"]["bm25"]
    assert rec1["metrics"]["propensity"]["curve"][0] == 1.0
    assert rec1["metrics"]["propensity"]["curve"][5] < rec1["metrics"]["propensity"]["curve"][0]
    stored = read_fusion(os_client, s.prefix)
    assert stored["version"] == 1 and stored["classes"]["text"] == text["tuned"]
    assert set(stored["classes"]) == {"text"}   # the classes without enough traffic keep the hand weights

    env = {"OPENSEARCH_URL": opensearch_url,
           "OSRECO_DEV_MODE": "1", "OSRECO_INDEX": s.alias, "OSRECO_STORE_PREFIX": s.prefix,
           "OSRECO_BUNDLE": s.bundle, "OSRECO_CF_MODEL": str(model_dir), "OSRECO_BUNDLE_RELOAD_S": "0.5",
           "OSRECO_BM25_WEIGHT": str(HAND.bm25_weight), "OSRECO_DENSE_WEIGHT": str(HAND.dense_weight)}
    with gunicorn_sidecar(env, workers=2, threads=2) as url:
        served = _get(f"{url}/v1/settings")
        assert served["fusion"]["version"] == 1 and served["fusion"]["classes"]["text"]["source"] == "learned"
        assert served["fusion"]["classes"]["text"]["dense"] == text["tuned"]["dense"]
        assert served["fusion"]["classes"]["listing"] == {**class_weights(HAND, "listing"), "rrf_k": 60,
                                                          "source": "hand"}
        assert served["cf_model"]["run_id"] == model.meta["run_id"]

        # day 2: validation users click what bm25 ranks first, held-out users still follow dense
        day2 = now - timedelta(minutes=30)
        ev_a, q_a = _traffic(rng, _users(40, False, "b"), day2, follow_dense=False)
        ev_b, q_b = _traffic(rng, _users(40, True, "b"), day2, follow_dense=True)
        _index(os_client, s.prefix, ev_a + ev_b, q_a + q_b)
        config2 = LearnConfig(index=s.alias, prefix=s.prefix, state_dir=config.state_dir, model_dir=str(model_dir),
                              window_days=1 / 24, hand=HAND)
        before = (model_dir / "cf_model.npz").stat().st_mtime_ns, load_state(config.state_dir)

        # a run killed mid-way (after reading and tuning, before promoting) changes nothing
        def killed(*_a, **_k):
            raise RuntimeError("killed")

        with monkeypatch.context() as m:
            m.setattr(learn_mod.cf_step, "plan_cf", killed)
            with pytest.raises(RuntimeError, match="killed"):
                run_learn(config2, os_client)
        assert ((model_dir / "cf_model.npz").stat().st_mtime_ns, load_state(config.state_dir)) == before
        assert read_fusion(os_client, s.prefix)["version"] == 1
        failed = read_history(config.state_dir)[-1]
        assert failed["error"] == "RuntimeError: killed" and failed["promoted"] == []

        # the next run redoes the same data: CF folded in, the worse weights refused
        rec2 = run_learn(config2, os_client)
        assert rec2["since"] == rec1["until"] == failed["since"]
        assert rec2["data"]["events"] == failed["data"]["events"] == len(ev_a + ev_b)
        assert rec2["promoted"] == ["cf"] and rec2["metrics"]["cf"]["mode"] == "incremental"
        text2 = rec2["metrics"]["fusion"]["classes"]["text"]
        assert not text2["promote"] and text2["reason"].startswith("refused")
        assert text2["heldout"]["tuned"] < text2["heldout"]["current"]
        assert {"what": "fusion.text", "reason": text2["reason"]} in rec2["refused"]
        assert read_fusion(os_client, s.prefix)["version"] == 1
        new_run = CFModel.load(model_dir).meta["run_id"]
        assert new_run != model.meta["run_id"]
        # the sidecar picks the promoted CF model up on its timer, no restart
        _wait(lambda: _get(f"{url}/v1/settings")["cf_model"]["run_id"] == new_run, "the CF model reload")
    table = history_table(read_history(config.state_dir))
    assert len(table.splitlines()) == 4 and "error: RuntimeError: killed" in table
    assert (Path(config.state_dir) / "history.png").read_bytes()[:4] == b"\x89PNG"

