"""In-cluster (ml-commons) vs osreco: ingest items/s and query latency with the same bundle.

    python -m bench.bench_incluster --url http://127.0.0.1:PORT                 # 1000 items, 60 queries
    python -m bench.bench_incluster --url URL --bundle DIR --items 300 --queries 20   # quick look

Ingest: one synthetic catalog (``bench.bench_ingest.write_catalog``) written twice into fresh
indexes of the same spec: by osreco's writer (``osreco ingest load``'s path: read, validate,
embed with the bundle's ``Encoder`` in this process, bulk) and by plain bulk requests into an
index whose default pipeline embeds ``title. text`` with the bundle deployed in ml-commons.
Both end with a refresh; items/s = items / wall seconds.

Queries: distinct product queries, each either a ``neural`` query (the node embeds it) or the
sidecar's path (``Encoder.encode_queries`` with its cache cleared, then a ``knn`` query), at 1 and 4
concurrent clients; p50 and p95 of the per-request wall time.

The node must deploy local models offline (``osreco.node`` supplies DJL's libtorch). On a
2-core machine the node and this process share the cores: "per core" is per machine here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_ingest import BRANDS, WORDS, ensure_bundles, write_catalog


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _latencies(fn, queries: list[str], clients: int) -> dict[str, float]:
    def timed(q: str) -> float:
        t = time.perf_counter()
        fn(q)
        return (time.perf_counter() - t) * 1000
    with ThreadPoolExecutor(clients) as pool:
        ms = list(pool.map(timed, queries))
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(_p(ms, 0.95), 2), "n": len(ms)}


def run(url: str, bundle: Path, n_items: int, n_queries: int, threads: int) -> dict[str, object]:
    from opensearchpy import OpenSearch

    from osreco.exporter import Encoder, load_manifest
    from osreco.exporter.mlcommons import ML_SETTINGS, register_and_deploy, write_ml_commons
    from osreco.ingest.catalog import FieldMap, read_catalog
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.pipeline import install_pipeline, pipeline_body
    from osreco.ingest.writer import WriteConfig, index_items

    client = OpenSearch(url, timeout=300)
    encoder = Encoder(bundle, threads=threads)
    share = Path(tempfile.mkdtemp(prefix="osreco-incluster-", dir="/tmp"))
    os.chmod(share, 0o755)
    body = write_ml_commons(bundle, share, load_manifest(bundle))
    os.chmod(share / "model.zip", 0o644)
    body.update(url=f"file://{share}/model.zip", name=f"bench-{share.name}")
    client.cluster.put_settings(body={"transient": ML_SETTINGS})
    model_id, deploy = register_and_deploy(client, body)
    if deploy["state"] != "COMPLETED":
        raise SystemExit(f"ml-commons deploy failed: {deploy.get('error')}")
    catalog = write_catalog(share / "catalog.jsonl", n_items)
    fields = FieldMap(facets={"brand": "brand"}, numeric={"price": ("price", "float")})  # embeds title. text
    items = [e for e in read_catalog(catalog, fields) if hasattr(e, "fields")]
    spec = IndexSpec.from_encoder(encoder, f"bench-incluster-{share.name[-8:]}")
    ours, cluster, pipeline = f"{spec.alias}-osreco", f"{spec.alias}-cluster", f"{spec.alias}-pipeline"
    out: dict[str, object] = {"items": len(items), "queries": n_queries, "threads": threads,
                              "bundle": load_manifest(bundle).model_name}
    try:
        for name in (ours, cluster):
            client.indices.create(index=name, body=spec.index_body())
        install_pipeline(client, pipeline, pipeline_body(spec.facets, model_id=model_id), default_for=cluster)
        t = time.perf_counter()
        index_items(client, encoder, ours, iter(read_catalog(catalog, fields)), WriteConfig())
        client.indices.refresh(index=ours)
        osreco_s = time.perf_counter() - t
        t = time.perf_counter()
        for start in range(0, len(items), 100):
            lines = "".join(json.dumps({"index": {"_index": cluster, "_id": i.item_id}}) + "\n"
                            + json.dumps(i.fields) + "\n" for i in items[start:start + 100])
            res = client.bulk(body=lines)
            if res["errors"]:
                raise SystemExit(f"pipeline bulk failed: {[x for x in res['items'] if 'error' in x['index']][:1]}")
        client.indices.refresh(index=cluster)
        cluster_s = time.perf_counter() - t
        out["ingest_items_per_s"] = {"osreco": round(len(items) / osreco_s, 1),
                                     "ml_commons_pipeline": round(len(items) / cluster_s, 1)}

        rng = random.Random(1)

        def queries(tag: str) -> list[str]:  # distinct texts per run: no query cache helps either side
            return [f"{rng.choice(BRANDS)} {' '.join(rng.choices(WORDS, k=rng.randint(2, 5)))} {tag}{i}"
                    for i in range(n_queries)]

        def neural(q: str) -> None:
            client.search(index=cluster, body={"size": 10, "_source": False, "query": {
                "neural": {"embedding": {"query_text": q, "model_id": model_id, "k": 10}}}})

        def sidecar(q: str) -> None:
            vector = encoder.encode_queries([q])[0].tolist()
            client.search(index=ours, body={"size": 10, "_source": False,
                                            "query": {"knn": {"embedding": {"vector": vector, "k": 10}}}})

        for q in queries("warm")[:10]:
            neural(q)
            sidecar(q)
        out["query_latency"] = {f"{clients}_clients": {"neural": _latencies(neural, queries(f"n{clients}_"), clients),
                                                       "sidecar_embed_knn": _latencies(sidecar, queries(f"s{clients}_"),
                                                                                       clients)}
                                for clients in (1, 4)}
    finally:
        client.indices.delete(index=f"{spec.alias}-*", ignore_unavailable=True)
        client.ingest.delete_pipeline(id=pipeline, ignore=[404])
        client.transport.perform_request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy")
        client.transport.perform_request("DELETE", f"/_plugins/_ml/models/{model_id}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("OPENSEARCH_URL"), help="node URL (default OPENSEARCH_URL)")
    ap.add_argument("--bundle", type=Path, default=None, help="embedding bundle (default: MiniLM, cached)")
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2, help="Encoder threads (the sidecar's side)")
    args = ap.parse_args()
    if not args.url:
        raise SystemExit("pass --url or set OPENSEARCH_URL")
    bundle = args.bundle or ensure_bundles()[0]
    print(json.dumps(run(args.url, bundle, args.items, args.queries, args.threads), indent=2))


if __name__ == "__main__":
    main()
