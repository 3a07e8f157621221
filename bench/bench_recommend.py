"""``/v1/recommend`` and similar items through the sidecar on MovieLens-100k: quality and latency,
the served blend against the old two-list fusion, side by side.

    python -m bench.bench_recommend --source osreco-eval-ml100k     # an index `osreco eval` built

Set-up: the source index (MiniLM embeddings of the titles) is copied to ``<source>-bench``;
``osreco cf eval``'s split (per-user time-ordered, newest 20 % held out, all ratings implicit
positives) is trained and stored the way ``osreco cf train`` stores it (factors, priors,
users, model folder). Each test user is asked ``GET /v1/recommend?k=10`` on the real app
(Flask test client, in-process: the node round trips are real, HTTP is not); NDCG@10 is
``ndcg_binary_at_k``. Latency: the two paths alternate per user, medians and p95 of the
request. Similar items: next-item HR@10 (a test user's newest training item -> their first
held-out item), content only (``OSRECO_SIMILAR_CF_WEIGHT=0``) against the blend.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace

import numpy as np
from opensearchpy import OpenSearch

from osreco.cf import store as cf_store
from osreco.cf.interactions import Interaction, read_interactions
from osreco.cf.model import CFConfig
from osreco.cf.priors import priors_from_model, write_priors
from osreco.cf.privacy import pseudonymize
from osreco.cf.train import train_models
from osreco.evaluation.cf import time_split
from osreco.evaluation.metrics import ndcg_binary_at_k
from osreco.ingest.connection import OpenSearchConfig, connect
from osreco.ingest.movielens import movielens_ratings_path
from osreco.plugin.app import create_app
from osreco.plugin.config import DEV_HMAC_KEY, SidecarConfig
from osreco.plugin.recommend import RecommendSettings
from osreco.plugin.service import RECOMMEND_FUSION


def copy_index(client: OpenSearch, source: str, target: str) -> None:
    """``target`` = ``source``'s mapping and documents (a fresh copy each run)."""
    client.indices.delete(index=f"{target}*", ignore_unavailable=True, allow_no_indices=True)
    concrete, body = next(iter(client.indices.get(index=source).items()))
    settings = {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}}
    client.indices.create(index=target, body={"settings": settings, "mappings": body["mappings"]})
    client.reindex(body={"source": {"index": concrete}, "dest": {"index": target}}, refresh=True,
                   request_timeout=600)


def setup(client: OpenSearch, index: str, model_dir: str) -> tuple[dict[str, list[str]], dict[str, set[str]],
                                                                     dict[str, list[str]]]:
    events = [Interaction(e.user_id, e.item_id, 1.0, e.timestamp)
              for e in read_interactions(movielens_ratings_path()).interactions]
    known = cf_store.indexed_item_ids(client, index)
    events = [e for e in events if e.item_id in known]
    train, test = time_split(events, 0.2)
    model = train_models(train, CFConfig(factors=64, threads=1), item_ids=sorted(known))
    model.fit_content(cf_store.read_item_embeddings(client, index))
    keys = {u: pseudonymize(u, DEV_HMAC_KEY) for u in {e.user_id for e in events}}
    model.user_keys = np.asarray([keys[u] for u in model.user_keys.tolist()])
    model.__post_init__()
    histories: dict[str, list[str]] = {}
    for e in sorted(train, key=lambda e: (e.timestamp, e.item_id)):
        histories.setdefault(e.user_id, []).append(e.item_id)
    store = cf_store.StoreConfig(prefix=index, item_index=index, history_len=2000)
    cf_store.write_item_factors(client, store, model.item_ids.tolist(), model.item_factors)
    write_priors(client, index, priors_from_model(model, train, 50))
    cf_store.write_user_vectors(client, store, model.user_keys.tolist(), model.user_factors,
                                {keys[u]: h for u, h in histories.items()})
    model.save(model_dir)
    first: dict[str, list[str]] = {}
    for e in sorted(events, key=lambda e: (e.timestamp, e.item_id)):
        if e.user_id in test and e.item_id in test[e.user_id]:
            first.setdefault(e.user_id, []).append(e.item_id)
    return histories, test, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", default="osreco-eval-ml100k")
    ap.add_argument("--users", type=int, default=0, help="test users (0 = all)")
    args = ap.parse_args()
    url = os.environ.get("OPENSEARCH_URL", "http://localhost:9200")
    client = connect(OpenSearchConfig(url=url))
    index = f"{args.source}-bench"
    copy_index(client, args.source, index)
    model_dir = tempfile.mkdtemp(prefix="osreco-bench-cf-")
    histories, test, first = setup(client, index, model_dir)
    config = SidecarConfig(opensearch=OpenSearchConfig(url=url), alias=index, dev_mode=True, cf_model_dir=model_dir,
                           bundle_reload_s=0, embed_vocabulary=False)
    new = create_app(config)
    old = create_app(config)
    old.extensions["osreco.services"].recommend_fusion = RECOMMEND_FUSION  # the path before the served blend
    users = sorted(test, key=int)[:args.users or None]
    paths = {"served blend": new.test_client(), "old fusion (kNN + popularity, RRF)": old.test_client()}
    ndcg: dict[str, list[float]] = {p: [] for p in paths}
    lat: dict[str, list[float]] = {p: [] for p in paths}
    for u in users:
        for name, c in paths.items():
            t0 = time.perf_counter()
            body = c.get(f"/v1/recommend?user_id={u}&k=10").get_json()
            lat[name].append((time.perf_counter() - t0) * 1000)
            ndcg[name].append(ndcg_binary_at_k([r["item_id"] for r in body["results"]], test[u], 10))
    out: dict[str, object] = {"users": len(users), "recommend": {
        p: {"ndcg@10": round(float(np.mean(ndcg[p])), 4), "p50_ms": round(statistics.median(lat[p]), 2),
            "p95_ms": round(float(np.percentile(lat[p], 95)), 2)} for p in paths}}
    hr = {}
    for label, w in (("content only", 0.0), ("blend (default weight)", RecommendSettings().similar_cf_weight)):
        app = create_app(replace(config, recommend=replace(RecommendSettings(), similar_cf_weight=w))).test_client()
        hits = []
        for u in users:
            q = histories[u][-1]
            body = app.get(f"/v1/items/{q}/similar?k=10").get_json()
            hits.append(float(first[u][0] in {r["item_id"] for r in body.get("results", [])}))
        hr[label] = round(float(np.mean(hits)), 4)
    out["similar_hr@10"] = hr
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
