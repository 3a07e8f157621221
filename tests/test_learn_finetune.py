"""`osreco learn --finetune` against the real node: logged searches (impressions, IPW-weighted
clicks) train the encoder and the reranker (tiny BERTs, so it runs in seconds); each candidate is
evaluated against the served model on held-out users' traffic and on the offline search task and
promoted through the gate (the alias rebuilt, ``current`` switched), or refused with nothing
changed (a gate asking too much; a reranker worse on held-out clicks); a run killed while
training leaves the served models and the pending data as they were. The sidecar's reranker
follows the switched ``reranker/current`` link without a restart."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from opensearchpy.helpers import bulk

from osreco.cf.events import ensure_events_index
from osreco.cf.forget import write_tombstone
from osreco.cf.privacy import pseudonymize
from osreco.cf.querylog import ensure_queries_index
from osreco.exporter import load_manifest
from osreco.exporter.bundles import switch_current
from osreco.exporter.encoder import Encoder
from osreco.ingest.catalog import FieldMap, read_catalog
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.rebuild import alias_indexes, alias_meta, ensure_index
from osreco.ingest.writer import WriteConfig, index_items
from osreco.learning import finetune as ft
from osreco.learning.finetune import FinetuneConfig, click_pairs, rerank_examples, traffic_ndcg
from osreco.learning.learn import LearnConfig, load_state, run_learn
from osreco.learning.logs import iso
from osreco.plugin.config import DEV_HMAC_KEY
from osreco.plugin.settings_store import RerankerWatch
from osreco.training.data import TrainingItem

COLORS = ["red", "blue", "green", "black", "white", "yellow"]
THINGS = ["lamp", "chair", "table", "sofa", "rug", "shelf", "clock"]
ITEMS = {f"p{n:02d}": f"{c} {t}" for n, (c, t) in enumerate((c, t) for c in COLORS for t in THINGS)}
CURVE = [1.0, 0.6, 0.45, 0.35, 0.3, 0.25, 0.2, 0.18, 0.16, 0.15]
CODES = ["alpha", "bravo", "delta", "echo", "golf", "hotel", "india", "kilo", "lima", "mike", "oscar", "papa", "romeo"]
ASKED = {i: f"{CODES[n % 13]} {CODES[(n // 13 + 2 * n) % 13]}" for n, i in enumerate(sorted(ITEMS))}
"""What users type for each item: words the titles do not share, so only the clicks can teach it."""


def _catalog() -> dict[str, TrainingItem]:
    return {i: TrainingItem(i, t, f"{t}. a {t} for the home") for i, t in ITEMS.items()}


def test_rows_become_weighted_pairs_and_examples_and_traffic_ndcg_scores_orders():
    cat = _catalog()
    rows = [{"user_id": u, "query": q, "query_id": qid, "item_id": i, "kind": k, "weight": w}
            for u, q, qid, i, k, w in [("u1", "red lamp", "q1", "p00", "click", 3.0),
                                       ("u1", "red lamp", "q1", "p01", "skip", 1.0),
                                       ("u2", "red lamp", "q2", "p00", "click", 1.0),
                                       ("u2", "blue sofa", "q3", "p10", "click", 2.0),
                                       ("u2", "blue sofa", "q3", "nope", "click", 9.0)]]
    pairs = click_pairs(rows, cat)
    # (red lamp, p00) sums 3 + 1, (blue sofa, p10) 2: scaled to mean 1; unknown items dropped
    assert [(p.anchor, p.item_id, p.weight) for p in pairs] == [("blue sofa", "p10", pytest.approx(2 / 3)),
                                                                 ("red lamp", "p00", pytest.approx(4 / 3))]
    examples = rerank_examples(rows, cat, sampled_negatives=1, seed=1)
    labelled = {(x.query, x.item_id): (x.label, x.weight) for x in examples}
    assert labelled[("red lamp", "p00")] == (1.0, pytest.approx(4 / 3))
    assert labelled[("red lamp", "p01")] == (0.0, 1.0)
    assert sum(1 for x in examples if x.label == 0.0) == 3   # one skip + one sampled per positive

    def by_title(query, texts):   # a perfect scorer: the clicked title first
        return [1.0 if t.startswith(query) else 0.0 for t in texts]

    def reverse(query, texts):
        return [0.0 if t.startswith(query) else 1.0 for t in texts]

    assert traffic_ndcg(rows, cat, by_title) == pytest.approx(1.0)
    # q1 (2 items) and q3 (1 known item: skipped) remain; q2 has one item only
    assert traffic_ndcg(rows, cat, reverse) == pytest.approx(1 / np.log2(3))
    # the held-out guard applies only when there is held-out traffic to score
    assert ft._guards(rows, cat) == ("traffic_ndcg",)
    assert ft._guards([r for r in rows if r["kind"] != "click"], cat) == ()


def test_reranker_watch_follows_a_switched_link(tmp_path, tiny_reranker_bundle):
    root = tmp_path / "reranker"
    root.mkdir()
    a, b = root / "a", root / "b"
    for d in (a, b):
        shutil.copytree(tiny_reranker_bundle, d)
    switch_current(root, a)
    served = []
    watch = RerankerWatch(str(root / "current"), served.append, lambda p: SimpleNamespace(path=p))
    assert watch.check() == "current" and served == []
    switch_current(root, b)
    assert watch.check() == "loaded" and served[-1].path == os.path.realpath(b)
    assert watch.check() == "current"


def _traffic(rng, users: list[str], at: datetime) -> tuple[list[dict], list[dict]]:
    """Three searches per user for an item (its :data:`ASKED` words); 10 items shown, the wanted one
    at a random position; clicks by relevance x :data:`CURVE`."""
    events, queries, ids = [], [], sorted(ITEMS)
    for u_i, user in enumerate(users):
        for r in range(3):
            want = ids[int(rng.integers(len(ids)))]
            others = [i for i in rng.permutation(ids) if i != want][:9]
            shown = list(others)
            shown.insert(int(rng.integers(10)), want)
            qid, text, ts = uuid.uuid4().hex, ASKED[want], iso(at + timedelta(seconds=u_i * 10 + r))
            queries.append({"query_id": qid, "user_key": user, "timestamp": ts, "endpoint": "search", "query": text,
                            "query_class": "text", "language": "en", "k": 10, "page": 1,
                            "served": [{"item_id": c, "position": p, "score": 1.0 / p}
                                       for p, c in enumerate(shown, 1)]})
            for p, c in enumerate(shown, 1):
                base = {"user_key": user, "item_id": c, "value": 1.0, "timestamp": ts, "query_id": qid, "position": p,
                        "query": text}
                events.append({**base, "kind": "impression"})
                if rng.random() < CURVE[p - 1] * (0.95 if c == want else 0.02):
                    events.append({**base, "kind": "click"})
    return events, queries


@pytest.fixture(scope="module")
def tuned_shop(os_client, tiny_bundle, tiny_model_factory, tmp_path_factory):
    alias = f"t-ft-{uuid.uuid4().hex[:8]}"
    work = tmp_path_factory.mktemp("learn-ft")
    path = work / "items.jsonl"
    path.write_text("".join(json.dumps({"item_id": i, "title": t, "text": f"a {t} for the home"}) + "\n"
                            for i, t in ITEMS.items()), encoding="utf-8")
    enc = Encoder(tiny_bundle, threads=1)
    assert index_items(os_client, enc, ensure_index(os_client, IndexSpec.from_encoder(enc, alias, cf_dim=4)),
                       read_catalog(path, FieldMap()), WriteConfig()).ok
    root = work / "bundles"
    root.mkdir()
    switch_current(root, tiny_bundle)
    prefix = f"{alias}-s"
    users = [pseudonymize(f"ft-{n}", DEV_HMAC_KEY) for n in range(120)]
    events, queries = _traffic(np.random.default_rng(5), users, datetime.now(timezone.utc) - timedelta(hours=2))
    ensure_events_index(os_client, prefix)
    qindex = ensure_queries_index(os_client, prefix)
    bulk(os_client, [{"_index": f"{prefix}-events", "_id": uuid.uuid4().hex, "_source": e} for e in events]
         + [{"_index": qindex, "_id": q["query_id"], "_source": q} for q in queries], refresh="wait_for")
    yield SimpleNamespace(alias=alias, prefix=prefix, root=root, catalog=str(path), work=work,
                          base=tiny_model_factory("bert"), bundle=tiny_bundle)
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True, expand_wildcards="all")


def _config(s, state: Path, min_new_pairs: int = 10, until: timedelta = timedelta(hours=1), **kw) -> LearnConfig:
    tune = FinetuneConfig(s.root, alias=s.alias, catalog=s.catalog, base=s.base, quantize=None, batch_size=8,
                          max_steps=400, epochs=30, lr=2e-3, threads=1, eval_queries=6, eval_users_per_query=2,
                          eval_items=80, **kw)
    return LearnConfig(index=s.alias, prefix=s.prefix, state_dir=str(state), window_days=1.0,
                       min_new_pairs=min_new_pairs, until=iso(datetime.now(timezone.utc) - until), finetune=tune)


def _served(client, alias: str) -> str:
    return alias_meta(client, alias_indexes(client, alias)[0])[1]["artifact_id"]


@pytest.mark.integration
@pytest.mark.slow
def test_learn_finetunes_gates_and_promotes_or_refuses(tuned_shop, os_client, monkeypatch):
    s = tuned_shop
    served_before = _served(os_client, s.alias)
    current_before = os.path.realpath(s.root / "current")

    # a run killed while training changes nothing and keeps the pending rows for the next run
    killed_state = s.work / "state-killed"

    def killed(*_a, **_k):
        raise RuntimeError("killed while training")

    with monkeypatch.context() as m:
        m.setattr("osreco.training.encoder.train_encoder", killed)
        with pytest.raises(RuntimeError, match="killed while training"):
            run_learn(_config(s, killed_state), os_client)
    assert load_state(killed_state)["pending"] == {"files": [], "pairs": 0} and load_state(killed_state)["runs"] == 0
    assert _served(os_client, s.alias) == served_before and os.path.realpath(s.root / "current") == current_before

    # a gate that asks for more than any model gives: both refused, nothing served changes
    refused_state = s.work / "state-refused"
    rec = run_learn(_config(s, refused_state, min_delta=1.0), os_client)
    fine = rec["metrics"]["finetune"]
    assert fine["due"] and {r["what"] for r in rec["refused"]} >= {"encoder", "reranker"}, json.dumps(fine)
    for name in ("encoder", "reranker"):
        assert not fine[name]["promoted"] and fine[name]["summary"].startswith("refuse")
        assert {"ndcg", "traffic_ndcg"} <= set(fine[name]["candidate"]) & set(fine[name]["current"])
    assert _served(os_client, s.alias) == served_before and os.path.realpath(s.root / "current") == current_before
    assert not (s.root / ft.RERANK_DIR / "current").exists()
    assert load_state(refused_state)["pending"] == {"files": [], "pairs": 0}   # consumed: not retried forever

    # the real gate. The encoder learns from the clicks which items the code words mean, ranks
    # held-out users' clicks higher and is promoted: the alias is rebuilt with its vectors and
    # `current` switched. The tiny cross-encoder cannot learn that mapping from this little data:
    # it ranks held-out clicks below the (promoted) encoder's order, so it is refused.
    # The rows wait as pending until enough pairs arrived; a user forgotten meanwhile is left out.
    state = s.work / "state"
    first = run_learn(_config(s, state, min_new_pairs=10**9), os_client)["metrics"]["finetune"]
    assert not first["due"] and load_state(state)["pending"]["files"] == [first["file"]]
    logged = ft.read_rows([first["file"]])
    gone = next(r["user_id"] for r in logged if r["kind"] == "click")
    write_tombstone(os_client, s.prefix, gone, iso(datetime.now(timezone.utc)))
    rec = run_learn(_config(s, state, min_delta=-1.0, until=timedelta(minutes=1)), os_client)
    fine = rec["metrics"]["finetune"]
    assert rec["data"]["events"] == 0 and fine["due"]   # no new traffic: the pending rows are due
    assert fine["rows"] == sum(1 for r in logged if r["user_id"] != gone) < len(logged)
    enc, rr = fine["encoder"], fine["reranker"]
    assert enc["candidate"]["traffic_ndcg"] > enc["current"]["traffic_ndcg"], json.dumps(enc)
    assert enc["promoted"] and "encoder" in rec["promoted"]
    new_id = load_manifest(Path(enc["bundle"])).artifact_id
    assert new_id != served_before and _served(os_client, s.alias) == new_id
    assert Path(os.path.realpath(s.root / "current")) == Path(enc["bundle"]).resolve()
    assert (state / ft.MODELS_DIR / "encoder" / "config.json").is_file()
    assert any(c.startswith("encoder fine-tuned") for c in rec["changes"])
    assert rr["candidate"]["traffic_ndcg"] < rr["current"]["traffic_ndcg"], json.dumps(rr)
    assert not rr["promoted"] and {"what": "reranker", "reason": rr["summary"]} in rec["refused"]
    assert not (s.root / ft.RERANK_DIR / "current").exists() and not (state / ft.MODELS_DIR / "reranker").exists()
    # the next fine-tune starts from the promoted encoder
    assert ft._start(state, "encoder", s.base) == state / ft.MODELS_DIR / "encoder"
