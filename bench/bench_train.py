"""Feedback-loop benchmarks: quality of the fine-tuned encoder and reranker, reranker cost, epoch time.

Three parts, each printing a markdown table:

    python -m bench.bench_train quality --base-bundle B --ft-bundle F [--rerank-bundle R]
        NDCG@10 / Recall@10 on osreco eval's personalized-search task (same queries, split and
        graded relevance), kNN signal only, exact search over all 1,681 MovieLens items;
        the reranker re-orders the fine-tuned kNN's top 50.
    python -m bench.bench_train latency --query-bundle B --rerank-bundle R [--rerank-bundle-fp32 R32]
        added cost of the cross-encoder over N=50 candidates vs one query embedding; contenders
        alternated in one process after a warm-up, same thread count.
    python -m bench.bench_train epoch --base MODEL_DIR [--pairs 256] [--epochs 2] [--random-init]
        seconds per epoch of encoder fine-tuning, CPU (and CUDA when torch sees a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"{c:.4f}" if isinstance(c, float) else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def quality(args: argparse.Namespace) -> None:
    """Base vs fine-tuned encoder (vs + reranker) on the personalized-search task, kNN only."""
    from osreco.evaluation.gate import offline_evaluator

    kw = dict(max_queries=args.max_queries, users_per_query=args.users_per_query, threads=args.threads)
    rows = []
    for name, bundle, rr in (("base MiniLM", args.base_bundle, None), ("fine-tuned", args.ft_bundle, None),
                             ("fine-tuned + reranker@50", args.ft_bundle, args.rerank_bundle),
                             ("base MiniLM + reranker@50", args.base_bundle, args.rerank_bundle)):
        if bundle is None or (rr is None and "reranker" in name):
            continue
        t = time.perf_counter()
        m = offline_evaluator(rerank_bundle=rr, **kw)(Path(bundle))
        rows.append([name, m["ndcg"], m["recall"], int(m["pairs"]), f"{time.perf_counter() - t:.1f}"])
    base = rows[0][1]
    print(_table(["model", "NDCG@10", "Recall@10", "pairs", "seconds"], rows))
    print()
    print(_table(["model", "NDCG@10 / base"], [[r[0], r[1] / base if base else float("nan")] for r in rows]))


def latency(args: argparse.Namespace) -> None:
    """p50/p90 of one query embedding vs reranking N candidates (int8, optionally fp32)."""
    from osreco.exporter import Encoder
    from osreco.training.data import movielens_catalog
    from osreco.training.reranker import rerank

    docs = [c.document for c in movielens_catalog().values()]
    query_enc = Encoder(args.query_bundle, threads=args.threads, device="cpu")
    contenders = {"query embedding (batch 1)": None, f"rerank int8 N={args.n}": Encoder(args.rerank_bundle,
                                                                                     threads=args.threads,
                                                                                     device="cpu")}
    if args.rerank_bundle_fp32:
        contenders[f"rerank fp32 N={args.n}"] = Encoder(args.rerank_bundle_fp32, threads=args.threads, device="cpu")
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(args.warmup + args.reps):
        query = f"a 90s comedy with a twist number {rep}"   # distinct: no LRU cache hits
        cands = docs[(rep * args.n) % (len(docs) - args.n):][: args.n]
        for name, enc in contenders.items():
            t = time.perf_counter()
            if enc is None:
                query_enc.encode_queries([query])
            else:
                rerank(enc, query, cands, top_n=args.n, batch_size=args.n)
            if rep >= args.warmup:
                times[name].append((time.perf_counter() - t) * 1000)
    base = statistics.median(times["query embedding (batch 1)"])
    rows = []
    for name, ts in times.items():
        ts = sorted(ts)
        rows.append([name, statistics.median(ts), ts[int(0.9 * (len(ts) - 1))], statistics.median(ts) / base])
    print(f"threads={args.threads}, reps={args.reps} after {args.warmup} warm-up, alternating")
    print(_table(["contender", "p50 ms", "p90 ms", "p50 / query embedding"], rows))


def _random_init_copy(base: Path, out: Path) -> Path:
    """``base``'s config and tokenizer with freshly initialised weights (same shapes, same cost)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from osreco.training.loop import load_tokenizer

    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(str(base))).save_pretrained(str(out))
    load_tokenizer(base).save_pretrained(str(out))
    return out


def epoch(args: argparse.Namespace) -> None:
    """Seconds per epoch of bi-encoder fine-tuning on the same pairs, per device.

    Epoch 1 includes one-off costs (CUDA context, cuBLAS handles, allocator growth); with
    ``--epochs 2`` the second epoch is the steady-state number.
    """
    import json
    import tempfile

    import torch

    from osreco.training.data import MovieLensConfig, movielens_catalog, movielens_events
    from osreco.training.encoder import EncoderTrainConfig, PairConfig, build_pairs, train_encoder
    from osreco.training.loop import LoopConfig

    torch.set_num_threads(args.threads)
    catalog = movielens_catalog()
    pairs = build_pairs(movielens_events(MovieLensConfig(max_users=args.users), catalog=catalog), catalog,
                        PairConfig(max_next_per_user=5))[: args.pairs]
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = _random_init_copy(Path(args.base), Path(tmp) / "random") if args.random_init else Path(args.base)
        for device in devices:
            loop = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=2e-5, device=device,
                              threads=args.threads, progress=False)
            result = train_encoder(EncoderTrainConfig(base, Path(tmp) / f"m-{device}", loop, dev_max=1),
                                   pairs, pairs[:2])
            name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({args.threads} threads)"
            for row in result.history[1:]:
                seconds = row["seconds"]
                rows.append([name, row["epoch"], len(pairs), row["step"], seconds, len(pairs) / seconds,
                             row["train_loss"]])
                records.append({"device": name, "epoch": row["epoch"], "pairs": len(pairs), "step": row["step"],
                                "seconds": seconds, "train_loss": row["train_loss"]})
    print(f"batch {args.batch_size}, {len(pairs)} pairs, random init: {args.random_init}, "
          f"torch {torch.__version__}")
    print(_table(["device", "epoch", "pairs", "steps (cumulative)", "seconds / epoch", "pairs/s",
                  "train loss"], rows))
    steady = {}
    for r in records:
        steady[r["device"]] = r["seconds"]   # the last epoch of each device
    if len(steady) == 2:
        (cpu_name, cpu_s), (gpu_name, gpu_s) = steady.items()
        print(f"\nlast epoch: {gpu_name} is {cpu_s / gpu_s:.1f}x faster than {cpu_name}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--base-bundle", required=True)
    q.add_argument("--ft-bundle", required=True)
    q.add_argument("--rerank-bundle", default=None)
    q.add_argument("--max-queries", type=int, default=0, help="0: every query of osreco eval")
    q.add_argument("--users-per-query", type=int, default=8)
    q.add_argument("--threads", type=int, default=2)
    q.set_defaults(run=quality)
    lat = sub.add_parser("latency")
    lat.add_argument("--query-bundle", required=True)
    lat.add_argument("--rerank-bundle", required=True)
    lat.add_argument("--rerank-bundle-fp32", default=None)
    lat.add_argument("--n", type=int, default=50)
    lat.add_argument("--reps", type=int, default=30)
    lat.add_argument("--warmup", type=int, default=5)
    lat.add_argument("--threads", type=int, default=2)
    lat.set_defaults(run=latency)
    ep = sub.add_parser("epoch")
    ep.add_argument("--base", required=True)
    ep.add_argument("--pairs", type=int, default=256)
    ep.add_argument("--threads", type=int, default=2)
    ep.add_argument("--users", type=int, default=200, help="MovieLens users whose feedback makes the pairs")
    ep.add_argument("--epochs", type=int, default=1)
    ep.add_argument("--batch-size", type=int, default=32)
    ep.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when torch sees no GPU")
    ep.add_argument("--random-init", action="store_true",
                    help="same config and tokenizer as --base, fresh weights (timing does not depend on them)")
    ep.add_argument("--json", default=None, help="also write the rows here")
    ep.set_defaults(run=epoch)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
