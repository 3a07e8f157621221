"""One `osreco learn` run on a day of MovieLens-100k-sized traffic, timed (the 10-minute target).

    python -m bench.bench_learn                 # 1682 items, 943 users, 100k past ratings, one day
    python -m bench.bench_learn --quick         # a tenth of it

Setup (synthetic, seeded, into ``bench-learn-*`` indexes on the node): an item index with a
``cf_vector`` field (dim 32) for 1682 items; 100k rating events of 943 users spread over the 30
days before; then one day of traffic: per user ``--searches`` searches, each a query-log document
with 50 served candidates (bm25/dense/taste ranks) and 12 shown items (impressions), clicks drawn
from relevance x a position curve, plus ``--recs`` recommendation pages. Then two learn runs are
timed: the first (no model yet: a full CF retrain, the day's tuning) and the next day's default
run (fold-in of the users with new events). Fine-tuning is not run (reported as due or not).
Prints one JSON line with the seconds of each run and what it used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
from opensearchpy.helpers import bulk

from osreco.cf.events import ensure_events_index
from osreco.cf.querylog import ensure_queries_index, queries_index
from osreco.ingest.connection import OpenSearchConfig, connect
from osreco.learning.learn import LearnConfig, run_learn
from osreco.learning.logs import iso

CURVE = 1.0 / np.arange(1, 13) ** 0.8


def _items_index(client, name: str, n: int, dim: int = 32) -> list[str]:
    client.indices.create(index=name, body={"settings": {"index": {"knn": True, "number_of_replicas": 0}},
                                            "mappings": {"properties": {
                                                "title": {"type": "text"},
                                                # lucene, as osreco's spec: the local node ships no faiss library
                                                "cf_vector": {"type": "knn_vector", "dimension": dim, "method": {
                                                    "name": "hnsw", "engine": "lucene",
                                                    "space_type": "innerproduct"}}}}})
    ids = [str(i) for i in range(1, n + 1)]
    bulk(client, ({"_index": name, "_id": i, "_source": {"title": f"movie {i}"}} for i in ids), refresh=True)
    return ids


def _traffic(rng: np.random.Generator, users: list[str], items: list[str], day: datetime, searches: int,
             recs: int) -> tuple[list[dict], list[dict]]:
    taste = {u: set(rng.choice(items, size=40, replace=False).tolist()) for u in users}
    events, queries = [], []
    for ui, user in enumerate(users):
        for r in range(searches + recs):
            search = r < searches
            cands = rng.choice(items, size=50, replace=False).tolist()
            qid = uuid.uuid4().hex
            ts = iso(day + timedelta(seconds=int(rng.integers(0, 86000))))
            dense = rng.permutation(50) + 1
            served = [{"item_id": c, "position": p, "score": 1.0 / p,
                       "signals": {"bm25": p if search else None, "dense": int(dense[p - 1]) if search else None,
                                   "taste": int(rng.integers(1, 51)), "popularity": None if search else p}}
                      for p, c in enumerate(cands, 1)]
            queries.append({"query_id": qid, "user_key": user, "timestamp": ts,
                            "endpoint": "search" if search else "recommend", "query": f"query {ui % 97}"
                            if search else "", "query_class": "text" if search else "none", "k": 12, "page": 1,
                            "served": served})
            for p, c in enumerate(cands[:12], 1):
                events.append({"user_key": user, "item_id": c, "kind": "impression", "value": 1.0, "timestamp": ts,
                               "query_id": qid, "position": p})
                if rng.random() < CURVE[p - 1] * (0.6 if c in taste[user] else 0.08):
                    events.append({"user_key": user, "item_id": c, "kind": "click", "value": 1.0, "timestamp": ts,
                                   "query_id": qid, "position": p})
    return events, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1682)
    ap.add_argument("--users", type=int, default=943)
    ap.add_argument("--ratings", type=int, default=100_000)
    ap.add_argument("--searches", type=int, default=5)
    ap.add_argument("--recs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a tenth of the users and ratings")
    ap.add_argument("--keep", action="store_true", help="keep the bench indexes")
    args = ap.parse_args()
    if args.quick:
        args.users, args.ratings = args.users // 10, args.ratings // 10
    client = connect(OpenSearchConfig.from_env())
    rng = np.random.default_rng(7)
    name = f"bench-learn-{uuid.uuid4().hex[:6]}"
    prefix = f"{name}-s"
    work = tempfile.mkdtemp(prefix="bench-learn-")
    try:
        items = _items_index(client, name, args.items)
        users = [f"u_{rng.bytes(32).hex()}" for _ in range(args.users)]
        now = datetime.now(timezone.utc).replace(microsecond=0)
        day0 = now - timedelta(days=2)
        pop = rng.zipf(1.3, size=args.ratings) % len(items)
        ratings = [{"user_key": users[int(rng.integers(0, len(users)))], "item_id": items[int(i)], "kind": "rating",
                    "value": float(rng.integers(1, 6)),
                    "timestamp": iso(day0 - timedelta(seconds=int(rng.integers(0, 30 * 86400))))} for i in pop]
        events, queries = _traffic(rng, users, items, day0 + timedelta(hours=1), args.searches, args.recs)
        ensure_events_index(client, prefix)
        ensure_queries_index(client, prefix)
        t = time.perf_counter()
        actions = ({"_index": f"{prefix}-events", "_id": uuid.uuid4().hex, "_source": e} for e in ratings + events)
        bulk(client, actions, chunk_size=5000, request_timeout=120)
        qdocs = ({"_index": queries_index(prefix), "_id": q["query_id"], "_source": q} for q in queries)
        bulk(client, qdocs, chunk_size=500, request_timeout=120)
        client.indices.refresh(index=f"{prefix}-*")
        load_s = time.perf_counter() - t
        print(f"loaded {len(ratings)} ratings, {len(events)} events, {len(queries)} queries in {load_s:.0f} s",
              file=sys.stderr)
        config = LearnConfig(index=name, prefix=prefix, state_dir=os.path.join(work, "state"),
                             model_dir=os.path.join(work, "cf"), until=iso(day0 + timedelta(days=1)))
        t = time.perf_counter()
        first = run_learn(config, client)
        first_s = time.perf_counter() - t
        print(f"first run: {first_s:.0f} s ({first['metrics']['cf']['mode']})", file=sys.stderr)
        ev2, q2 = _traffic(rng, users, items, day0 + timedelta(days=1, hours=1), args.searches, args.recs)
        bulk(client, ({"_index": f"{prefix}-events", "_id": uuid.uuid4().hex, "_source": e} for e in ev2),
             chunk_size=5000, request_timeout=120)
        bulk(client, ({"_index": queries_index(prefix), "_id": q["query_id"], "_source": q} for q in q2),
             chunk_size=500, request_timeout=120)
        client.indices.refresh(index=f"{prefix}-*")
        t = time.perf_counter()
        second = run_learn(LearnConfig(**{**config.__dict__, "until": iso(day0 + timedelta(days=2))}), client)
        second_s = time.perf_counter() - t
        print(json.dumps({
            "items": len(items), "users": len(users), "past_ratings": len(ratings),
            "day_events": len(events), "day_queries": len(queries), "load_s": round(load_s, 1),
            "first_run_s": round(first_s, 1), "first_cf": first["metrics"]["cf"]["mode"],
            "next_day_run_s": round(second_s, 1), "next_cf": second["metrics"]["cf"]["mode"],
            "promoted": [first["promoted"], second["promoted"]],
            "fusion": [first.get("fusion"), second.get("fusion")],
            "finetune": second["metrics"]["finetune"], "curve": first["metrics"]["propensity"]["curve"][:12]}))
    finally:
        if not args.keep:
            client.indices.delete(index=f"{name}*", ignore_unavailable=True, allow_no_indices=True,
                                  expand_wildcards="all")


if __name__ == "__main__":
    main()
