"""Events fan-out benchmark: does a large ``/v1/events`` batch delay a concurrent ``/v1/search``?

    python -m bench.bench_fanout                      # 500 users per batch, 20 s per phase
    python -m bench.bench_fanout --users 500 --seconds 5   # quick look (bench/run_all.py)

The sidecar runs under gunicorn (2 workers, 4 threads, ``tests/servers.py``) over the shop
fixture catalog (BM25 only) with a small trained CF model, so every batch queues its users
for the fold-in. One client thread sends ``/v1/search`` back to back; in the loaded phase
``--clients`` more threads (default 2) post batches of ``--users`` distinct users (one click each) back to back. Prints
search p50/p99 without and with the events load, their ratio, the events calls' p50, and
whether the target (p99 delayed by at most 100 ms) held.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _post(url: str, body: dict) -> float:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
    return time.perf_counter() - start


FACETS = ("brand", "color", "category")


def _setup(url: str, alias: str, work: Path) -> tuple[Path, list[str]]:
    from osreco.cf.interactions import Interaction
    from osreco.cf.model import CFConfig
    from osreco.cf.train import train_models
    from osreco.ingest.connection import OpenSearchConfig, connect
    from osreco.ingest.fixtures import read_ecommerce_items
    from osreco.ingest.index_spec import IndexSpec

    client = connect(OpenSearchConfig(url=url))
    items = list(read_ecommerce_items())
    spec = IndexSpec(alias=alias, dim=2, artifact_id="bench-fanout", cf_dim=8).with_fields(facets=FACETS)
    client.indices.create(index=alias, body={"settings": spec.settings(), "mappings": spec.mappings()})
    for it in items:
        client.index(index=alias, id=it.item_id, body={k: v for k, v in it.fields.items() if k != "item_id"})
    client.indices.refresh(index=alias)
    ids = [it.item_id for it in items]
    rows = [Interaction(f"u_seed{u}", ids[(u * 7 + j) % len(ids)], 1.0, 0.0) for u in range(40) for j in range(5)]
    train_models(rows, CFConfig(factors=8, iterations=3, threads=1)).save(work / "cf")
    return work / "cf", ids


def _searches(base: str, stop: threading.Event, out: list[float]) -> None:
    queries = ("red running shoes", "waterproof jacket", "wireless headphones", "laptop", "blue backpack")
    n = 0
    while not stop.is_set():
        out.append(_post(f"{base}/v1/search", {"q": queries[n % len(queries)], "k": 10}))
        n += 1


def _events(base: str, users: int, items: list[str], stop: threading.Event, out: list[float],
            refused: list[int]) -> None:
    """Post batches back to back; a 429 (fold-in queue full) is counted and its Retry-After honoured."""
    while not stop.is_set():
        tag = uuid.uuid4().hex[:8]
        batch = [{"user_id": f"b-{tag}-{u}", "item_id": items[u % len(items)], "kind": "click"} for u in range(users)]
        try:
            out.append(_post(f"{base}/v1/events", {"events": batch}))
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise
            refused.append(1)
            stop.wait(float(e.headers.get("Retry-After", "1")))


def _phase(base: str, seconds: float, users: int, items: list[str], load: bool,
           clients: int = 2) -> tuple[list[float], list[float]]:
    stop, lat, ev, refused = threading.Event(), [], [], []
    threads = [threading.Thread(target=_searches, args=(base, stop, lat))]
    if load:
        threads += [threading.Thread(target=_events, args=(base, users, items, stop, ev, refused))
                    for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if refused:
        print(f"  {len(refused)} events batches refused with 429 (fold-in queue full; Retry-After honoured)")
    return lat, ev


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000.0


def main() -> None:
    """Run both phases and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500, help="distinct users per events batch")
    parser.add_argument("--clients", type=int, default=2, help="threads posting events batches back to back")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    args = parser.parse_args()
    from servers import gunicorn_sidecar

    url = os.environ.get("OPENSEARCH_URL") or "http://127.0.0.1:9200"
    alias = f"bench-fanout-{uuid.uuid4().hex[:6]}"
    from osreco.ingest.connection import OpenSearchConfig, connect

    with tempfile.TemporaryDirectory() as tmp:
        try:
            cf_dir, items = _setup(url, alias, Path(tmp))
            env = {"OPENSEARCH_URL": url, "OSRECO_INDEX": alias, "OSRECO_CF_MODEL": str(cf_dir),
                   "OSRECO_DEV_MODE": "1", "OSRECO_EMBED_VOCABULARY": "0",
                   "OSRECO_FACETS": ",".join(FACETS), "OSRECO_BUNDLE_RELOAD_S": "0",
                   "OSRECO_MAX_BODY_BYTES": str(1 << 20)}
            with gunicorn_sidecar(env, workers=2, threads=4) as base:
                _phase(base, 2.0, args.users, items, load=False)  # warm-up
                quiet, _ = _phase(base, args.seconds, args.users, items, load=False)
                busy, ev = _phase(base, args.seconds, args.users, items, load=True, clients=args.clients)
        finally:
            connect(OpenSearchConfig(url=url)).indices.delete(index=f"{alias}*", ignore_unavailable=True)
    q50, q99, b50, b99 = _pct(quiet, .5), _pct(quiet, .99), _pct(busy, .5), _pct(busy, .99)
    print(f"search alone:        n={len(quiet)} p50={q50:.1f} ms p99={q99:.1f} ms")
    print(f"search + events load: n={len(busy)} p50={b50:.1f} ms p99={b99:.1f} ms "
          f"({len(ev)} batches of {args.users} users, p50 {statistics.median(ev) * 1000 if ev else 0:.0f} ms)")
    print(f"p99 ratio {b99 / q99:.2f}, p99 delay {b99 - q99:.1f} ms: target <= 100 ms "
          f"{'met' if b99 - q99 <= 100 else 'MISSED'}")


if __name__ == "__main__":
    main()
